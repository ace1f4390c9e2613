//! Mutual TLS for the mesh: both sides present a certificate signed by the
//! cluster CA, or the handshake fails.
//!
//! Host names play no part: a node dials an address, not a name, so the
//! client side checks the chain only; which node answered is read from the
//! certificate afterwards ([`crate::pki::node_name_of`]) and bound to the
//! peer's address by the mesh.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, SignatureScheme};

use crate::certs::{provider, roots};
use crate::pki::Identity;

/// The ALPN protocol of the mesh; the suffix is the wire version.
pub const ALPN: &[u8] = b"ringhost-mesh/1";

/// The server name every node dials with. It is not checked (see the module
/// docs); it only has to be a valid name.
pub(crate) const DIAL_NAME: &str = "mesh.ringhost";

/// Accepts a server whose chain leads to the cluster CA, whatever its name.
#[derive(Debug)]
struct ClusterServerVerifier {
    roots: RootCertStore,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The rustls configurations of one node: as a server (it requires a client
/// certificate from the cluster CA) and as a client (it presents its own).
pub(crate) fn configs(
    id: &Identity,
) -> Result<(rustls::ServerConfig, rustls::ClientConfig), String> {
    let provider = provider();
    let roots = roots(&id.ca)?;
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| e.to_string())?;
    server.alpn_protocols = vec![ALPN.to_vec()];

    let server_verifier = Arc::new(ClusterServerVerifier {
        roots,
        algs: provider.signature_verification_algorithms,
    });
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(server_verifier)
        .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
        .map_err(|e| e.to_string())?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok((server, client))
}
