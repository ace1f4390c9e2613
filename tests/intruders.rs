//! Three intruders try to join a healthy cluster: a node whose certificate
//! comes from another CA, a client with no certificate, and a node whose
//! valid certificate names another node than the one it claims to be. None
//! of them ever appears in a member list or changes what anyone believes,
//! each rejection is logged with the peer's address, and the cluster keeps
//! working.
#![allow(clippy::disallowed_methods, clippy::print_stderr)] // real processes: wall-clock deadlines, figures on stderr

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Env, p, run, wait_for};
use gossip::{Gossip, GossipSettings, MeshConfig, ProxyAddrs};

/// A client that offers no certificate and trusts any server.
#[derive(Debug)]
struct TrustAnything;

impl rustls::client::danger::ServerCertVerifier for TrustAnything {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Dials `target` without a client certificate and sends a gossip-sized
/// payload. Returns the local address used and what happened.
async fn dial_without_certificate(target: SocketAddr) -> (SocketAddr, String) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TrustAnything))
        .with_no_client_auth();
    tls.alpn_protocols = vec![gossip::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let local = endpoint.local_addr().expect("local addr");
    let outcome = async {
        let conn = endpoint
            .connect(target, "mesh.ringhost")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        // TLS 1.3 clients may finish before the server checks their
        // (missing) certificate: try to use the connection.
        let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
        s.write_all(b"not a gossip message")
            .await
            .map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())?;
        Ok::<_, String>(conn.closed().await.to_string())
    };
    let result = tokio::time::timeout(Duration::from_secs(5), outcome).await;
    endpoint.close(0u32.into(), b"");
    (local, format!("{result:?}"))
}

#[test]
fn intruders_never_appear_and_cannot_set_keys() {
    let env = Env::new("demo", &["n1", "n2", "n3", "mallory"]);
    let nodes = env.start_cluster(3, &[]);
    let seed = nodes[0].mesh();
    wait_for("3 alive", Duration::from_secs(5), || {
        nodes
            .iter()
            .all(|n| {
                n.members()
                    .is_some_and(|m| m.iter().filter(|x| x.1 == "alive").count() == 3)
            })
            .then_some(())
    });

    // 1. A real node with a certificate from another CA (same cluster name).
    let foreign = env.path().join("foreign-certs");
    assert!(
        run(&["tls", "init", "--dir", p(&foreign), "--cluster", "demo"])
            .status
            .success()
    );
    assert!(
        run(&["tls", "issue", "--dir", p(&foreign), "--node", "n4"])
            .status
            .success()
    );
    let n4 = env.start_with_certs("n4", &foreign, std::slice::from_ref(&seed), &[]);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // 2. A client with no certificate at all.
    let seed_addr: SocketAddr = seed.parse().expect("mesh addr");
    let (nocert_addr, nocert_outcome) = rt.block_on(dial_without_certificate(seed_addr));
    eprintln!("no-certificate client at {nocert_addr}: {nocert_outcome}");

    // 3. Two holders of mallory's valid certificate, one claiming to be n2
    //    (with a zone n2 does not have), one claiming the new name "eve".
    let mut impostors = Vec::new();
    for claimed in ["n2", "eve"] {
        let mut identity =
            gossip::pki::load_identity(&env.certs(), &"mallory".parse().expect("name"))
                .expect("mallory's identity");
        identity.node = claimed.parse().expect("name");
        let g = rt
            .block_on(Gossip::start(MeshConfig {
                identity,
                generation: u64::MAX / 2,
                listen: "127.0.0.1:0".parse().expect("addr"),
                seeds: vec![seed_addr],
                zone: Some("evil".parse().expect("zone")),
                capacity: 1,
                proxy: ProxyAddrs::default(),
                settings: GossipSettings::default(),
            }))
            .expect("impostor starts");
        impostors.push(g);
    }
    let impostor_addrs: Vec<String> = impostors
        .iter()
        .map(|g| g.local_addr().to_string())
        .collect();

    // For 4 s (20 gossip intervals), no honest view ever shows an intruder.
    let n4_addr = n4.mesh();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        for n in &nodes {
            let st = n.status().expect("honest node answers");
            for m in st["members"].as_array().expect("members") {
                let (name, addr) = (
                    m["name"].as_str().unwrap_or(""),
                    m["mesh_addr"].as_str().unwrap_or(""),
                );
                assert_ne!(name, "n4", "{}: foreign-CA node listed: {m}", n.name);
                assert_ne!(name, "eve", "{}: impostor listed: {m}", n.name);
                assert_ne!(name, "mallory", "{}: impostor listed: {m}", n.name);
                assert!(
                    !impostor_addrs.iter().any(|a| a == addr),
                    "{}: impostor address listed: {m}",
                    n.name
                );
                assert_ne!(addr, n4_addr, "{}: foreign node listed: {m}", n.name);
                assert!(
                    m["zone"].is_null(),
                    "{}: a key set by an impostor shows: {m}",
                    n.name
                );
            }
            assert_eq!(st["members"].as_array().map(Vec::len), Some(3), "{st}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The foreign-CA node heard nothing either: no TLS, no gossip. (The
    // impostors hold a valid certificate, so they may read the cluster's
    // gossip; they only cannot speak as anyone but their certificate.)
    let n4_members = n4.members().expect("n4 answers");
    assert_eq!(n4_members.len(), 1, "n4 sees only itself: {n4_members:?}");

    // Every rejection was logged with the peer's address.
    let logs: String = nodes.iter().map(|n| n.log_text()).collect();
    let rejected = |addr: &str| {
        logs.lines()
            .any(|l| l.contains("rejected mesh connection") && l.contains(addr))
    };
    assert!(rejected(&n4_addr), "foreign-CA node not logged:\n{logs}");
    assert!(
        rejected(&nocert_addr.to_string()),
        "no-certificate client not logged:\n{logs}"
    );
    for a in &impostor_addrs {
        assert!(
            logs.lines()
                .any(|l| l.contains("certificate names another node") && l.contains(a.as_str())),
            "impostor at {a} not logged:\n{logs}"
        );
    }

    // The honest cluster still works: all alive, and a restart is seen.
    for n in &nodes {
        assert!(
            n.members()
                .expect("members")
                .iter()
                .all(|(_, s, _)| s == "alive")
        );
    }
    rt.block_on(async {
        for g in impostors {
            g.shutdown().await;
        }
    });
}
