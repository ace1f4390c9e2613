//! ClientHello parsing against real hellos: captures from `openssl
//! s_client` and curl, and hellos that rustls builds, split and re-recorded
//! in every way the record layer allows.

use std::sync::Arc;

use proxy::tls::{ClientHello, DEFAULT_MAX_HELLO_LEN, TlsError, parse_client_hello};
use rustls::pki_types::ServerName;

/// `openssl s_client -servername WWW.Example.ORG -alpn h2,http/1.1`
const OPENSSL_HELLO: &[u8] = include_bytes!("data/hello-openssl.bin");
/// `curl https://shop.example.net:18443/` (curl 7.88.1, OpenSSL 3.0)
const CURL_HELLO: &[u8] = include_bytes!("data/hello-curl.bin");

/// Parses `raw` whole and checks that every prefix of the hello's records
/// needs more bytes.
fn hello(raw: &[u8]) -> Result<ClientHello, TlsError> {
    let whole = parse_client_hello(raw, DEFAULT_MAX_HELLO_LEN);
    for cut in 0..raw.len() {
        let part = parse_client_hello(&raw[..cut], DEFAULT_MAX_HELLO_LEN);
        match (&whole, &part) {
            (Ok(Some(h)), Ok(None)) if cut < h.len => {}
            (Ok(Some(h)), Ok(Some(p))) if cut >= h.len && p == h => {}
            (Err(_), Ok(None) | Err(_)) => {}
            _ => panic!("prefix of {cut} bytes gave {part:?}, whole gave {whole:?}"),
        }
    }
    match whole {
        Ok(Some(h)) => Ok(h),
        Ok(None) => panic!("incomplete hello"),
        Err(e) => Err(e),
    }
}

/// The first flight rustls sends for `name` (an SNI name or an IP).
fn rustls_hello(name: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let server = ServerName::try_from(name.to_owned()).expect("test names are valid");
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), server).expect("config is complete");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out)
            .expect("writing to a Vec cannot fail");
    }
    out
}

/// Re-frames a single-record hello into records of at most `size` bytes of
/// fragment each, as a client may (RFC 8446 §5.1).
fn refragment(raw: &[u8], size: usize) -> Vec<u8> {
    let len = usize::from(u16::from_be_bytes([raw[3], raw[4]]));
    let fragment = &raw[5..5 + len];
    let mut out = Vec::new();
    for piece in fragment.chunks(size) {
        out.extend_from_slice(&raw[..3]);
        out.extend_from_slice(&u16::try_from(piece.len()).expect("small").to_be_bytes());
        out.extend_from_slice(piece);
    }
    out
}

#[test]
fn openssl_capture() {
    let h = hello(OPENSSL_HELLO).expect("a real hello");
    assert_eq!(h.server_name.as_deref(), Some("www.example.org"));
    assert_eq!(h.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert_eq!(h.legacy_version, 0x0303);
    assert_eq!(h.len, OPENSSL_HELLO.len());
}

#[test]
fn curl_capture() {
    let h = hello(CURL_HELLO).expect("a real hello");
    assert_eq!(h.server_name.as_deref(), Some("shop.example.net"));
    assert_eq!(h.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
}

#[test]
fn rustls_hellos() {
    let raw = rustls_hello("Site.Example.COM", &[b"http/1.1"]);
    let h = hello(&raw).expect("rustls's hello");
    assert_eq!(h.server_name.as_deref(), Some("site.example.com"));
    assert_eq!(h.alpn, [b"http/1.1".to_vec()]);
    // Bytes after the hello are not part of it.
    let mut more = raw.clone();
    more.extend_from_slice(b"\x14\x03\x03\x00\x01\x01");
    let h2 = parse_client_hello(&more, DEFAULT_MAX_HELLO_LEN)
        .expect("valid")
        .expect("complete");
    assert_eq!(h2.len, raw.len());

    // No SNI for an IP address, no ALPN when none is configured.
    let h = hello(&rustls_hello("192.0.2.1", &[])).expect("rustls's hello");
    assert_eq!(h.server_name, None);
    assert!(h.alpn.is_empty());
}

#[test]
fn hellos_split_over_records() {
    for base in [
        OPENSSL_HELLO.to_vec(),
        CURL_HELLO.to_vec(),
        rustls_hello("a.example", &[b"h2"]),
    ] {
        let want = parse_client_hello(&base, DEFAULT_MAX_HELLO_LEN)
            .expect("valid")
            .expect("complete");
        for size in [1, 2, 3, 4, 5, 7, 64, 100] {
            let raw = refragment(&base, size);
            let got = hello(&raw).expect("refragmented hello");
            assert_eq!(got.server_name, want.server_name, "fragments of {size}");
            assert_eq!(got.alpn, want.alpn);
            assert_eq!(got.len, raw.len());
        }
    }
}

#[test]
fn not_tls() {
    let limit = DEFAULT_MAX_HELLO_LEN;
    assert_eq!(
        parse_client_hello(b"GET / HTTP/1.1\r\n", limit),
        Err(TlsError::NotTls)
    );
    assert_eq!(parse_client_hello(b"G", limit), Err(TlsError::NotTls));
    assert_eq!(
        parse_client_hello(b"\x16\x04", limit),
        Err(TlsError::NotTls)
    );
    // An SSL 2.0-style hello.
    assert_eq!(
        parse_client_hello(b"\x80\x2e\x01\x00\x02", limit),
        Err(TlsError::NotTls)
    );
    assert_eq!(parse_client_hello(b"", limit), Ok(None));
    assert_eq!(parse_client_hello(b"\x16\x03", limit), Ok(None));
    // A handshake that starts with something other than a ClientHello.
    assert_eq!(
        parse_client_hello(b"\x16\x03\x03\x00\x04\x02", limit),
        Err(TlsError::NotClientHello)
    );
    // An alert record in the middle of the hello.
    let mut raw = refragment(OPENSSL_HELLO, 50);
    raw.truncate(55);
    raw.extend_from_slice(b"\x15\x03\x03\x00\x02\x02\x28");
    assert!(matches!(
        parse_client_hello(&raw, limit),
        Err(TlsError::Malformed(_))
    ));
}

#[test]
fn size_limits() {
    let raw = OPENSSL_HELLO;
    assert!(parse_client_hello(raw, raw.len()).expect("fits").is_some());
    assert_eq!(
        parse_client_hello(raw, raw.len() - 1),
        Err(TlsError::TooLarge {
            limit: raw.len() - 1
        })
    );
    // The limit is known from the record header, before the body arrives.
    assert_eq!(
        parse_client_hello(&raw[..5], 100),
        Err(TlsError::TooLarge { limit: 100 })
    );
    // And from the handshake header when the hello spans records.
    let split = refragment(raw, 10);
    assert_eq!(
        parse_client_hello(&split[..15], 100),
        Err(TlsError::TooLarge { limit: 100 })
    );
    // Records longer than TLS allows, and empty ones.
    assert!(matches!(
        parse_client_hello(b"\x16\x03\x01\x40\x01", 1 << 20),
        Err(TlsError::Malformed(_))
    ));
    assert!(matches!(
        parse_client_hello(b"\x16\x03\x01\x00\x00", 1 << 20),
        Err(TlsError::Malformed(_))
    ));
}

/// Builds a hello from its parts, to reach each structural check.
fn build(extensions: Option<&[u8]>) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
    body.extend_from_slice(&[1, 0]); // null compression
    if let Some(ext) = extensions {
        body.extend_from_slice(&u16::try_from(ext.len()).expect("small").to_be_bytes());
        body.extend_from_slice(ext);
    }
    let mut hs = vec![1];
    hs.extend_from_slice(&u32::try_from(body.len()).expect("small").to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&u16::try_from(hs.len()).expect("small").to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

fn sni_ext(names: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in names {
        list.push(*kind);
        list.extend_from_slice(&u16::try_from(name.len()).expect("small").to_be_bytes());
        list.extend_from_slice(name);
    }
    let mut data = u16::try_from(list.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    data.extend_from_slice(&list);
    let mut ext = vec![0, 0];
    ext.extend_from_slice(&u16::try_from(data.len()).expect("small").to_be_bytes());
    ext.extend_from_slice(&data);
    ext
}

#[test]
fn built_hellos() {
    let h = hello(&build(None)).expect("no extensions is valid");
    assert_eq!(h.server_name, None);
    let h = hello(&build(Some(&[]))).expect("empty extensions are valid");
    assert_eq!(h.server_name, None);
    let h = hello(&build(Some(&sni_ext(&[(0, b"A.Example.")])))).expect("valid");
    assert_eq!(h.server_name.as_deref(), Some("a.example"));
    // Unknown name types are skipped.
    let h = hello(&build(Some(&sni_ext(&[(7, b"x"), (0, b"b.example")])))).expect("valid");
    assert_eq!(h.server_name.as_deref(), Some("b.example"));

    let two = sni_ext(&[(0, b"a.example"), (0, b"b.example")]);
    assert!(matches!(
        hello(&build(Some(&two))),
        Err(TlsError::Malformed(_))
    ));
    let bad = sni_ext(&[(0, b"a b")]);
    assert!(matches!(
        hello(&build(Some(&bad))),
        Err(TlsError::InvalidServerName(_))
    ));
    let empty = sni_ext(&[(0, b"")]);
    assert!(matches!(
        hello(&build(Some(&empty))),
        Err(TlsError::InvalidServerName(_))
    ));
    let mut dup = sni_ext(&[(0, b"a.example")]);
    dup.extend_from_slice(&sni_ext(&[(0, b"a.example")]));
    assert!(matches!(
        hello(&build(Some(&dup))),
        Err(TlsError::Malformed(_))
    ));
    // Lengths that do not add up.
    for ext in [
        &[0, 0, 0, 5, 0, 3, 0, 0, 9][..], // name longer than its list
        &[0, 0, 0, 2, 0, 0],              // empty list
        &[0, 0, 0, 9],                    // extension longer than the rest
        &[0, 16, 0, 3, 0, 1, 0],          // empty ALPN name
        &[0, 16, 0, 2, 0, 0],             // empty ALPN list
        &[0, 16, 0, 4, 0, 2, 5, b'h'],    // ALPN name past its list
        &[0],                             // truncated extension header
    ] {
        assert!(
            matches!(hello(&build(Some(ext))), Err(TlsError::Malformed(_))),
            "{ext:?}"
        );
    }
    // Bytes after the extensions block.
    let mut raw = build(Some(&[]));
    raw.push(0);
    let len = raw.len() - 5;
    raw[3..5].copy_from_slice(&u16::try_from(len).expect("small").to_be_bytes());
    raw[8] += 1;
    assert!(matches!(hello(&raw), Err(TlsError::Malformed(_))));
}
