//! Certificate checks shared by the mesh's TLS set-up and the loading of a
//! node's identity: which crypto provider, which roots, whether a chain
//! leads to the cluster CA, whether a key belongs to a certificate.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::ParsedCertificate;

/// The crypto provider of every TLS use in the mesh.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store that holds the cluster CA only.
pub(crate) fn roots(ca: &CertificateDer<'static>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    Ok(roots)
}

/// Checks that `chain[0]` is signed by `ca` (through `chain[1..]`) and is
/// fit for both ends of a mesh connection.
pub(crate) fn verify_chain(
    ca: &CertificateDer<'static>,
    chain: &[CertificateDer<'static>],
) -> Result<(), String> {
    let roots = roots(ca)?;
    let end = chain.first().ok_or("empty certificate chain")?;
    let parsed = ParsedCertificate::try_from(end).map_err(|e| e.to_string())?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &chain[1..],
        UnixTime::now(),
        provider().signature_verification_algorithms.all,
    )
    .map_err(|e| e.to_string())
}

/// Whether `key` is the private key of `cert`.
pub(crate) fn key_matches(cert: &CertificateDer<'static>, key: &PrivateKeyDer<'static>) -> bool {
    let Ok(signing) = provider().key_provider.load_private_key(key.clone_key()) else {
        return false;
    };
    let Some(public) = signing.public_key() else {
        return false;
    };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return false;
    };
    parsed.public_key().raw == public.as_ref()
}
