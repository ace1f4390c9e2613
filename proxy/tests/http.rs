//! Request and response heads: every framing and routing rule, real
//! captures, and the property that any prefix of a head is `Ok(None)`.

use proxy::chunked::ChunkedDecoder;
use proxy::http::{
    HttpError, Limits, Method, RequestBody, RequestHead, ResponseBody, ResponseHead, TargetForm,
    Version, parse_request, parse_response,
};

const CURL_CHUNKED_POST: &[u8] = include_bytes!("data/req-curl-post.bin");

/// Parses `raw` whole, and checks that every shorter prefix of its head
/// needs more bytes while every longer one gives the same head.
fn request(raw: &[u8]) -> Result<RequestHead, HttpError> {
    request_with(raw, &Limits::default())
}

fn request_with(raw: &[u8], limits: &Limits) -> Result<RequestHead, HttpError> {
    let whole = parse_request(raw, limits);
    for cut in 0..raw.len() {
        let part = parse_request(&raw[..cut], limits);
        match (&whole, &part) {
            (Ok(Some(head)), Ok(None)) if cut < head.head_len => {}
            (Ok(Some(head)), Ok(Some(p))) if cut >= head.head_len && p == head => {}
            // An error may show before the whole head is there, but a
            // prefix never yields a head the whole input does not.
            (Err(_), Ok(None) | Err(_)) => {}
            _ => panic!("prefix of {cut} bytes gave {part:?}, whole gave {whole:?}"),
        }
    }
    match whole {
        Ok(Some(head)) => Ok(head),
        Ok(None) => panic!("incomplete request {:?}", String::from_utf8_lossy(raw)),
        Err(e) => Err(e),
    }
}

fn ok(raw: &str) -> RequestHead {
    match request(raw.as_bytes()) {
        Ok(head) => head,
        Err(e) => panic!("{raw:?} refused: {e}"),
    }
}

fn err(raw: &str) -> HttpError {
    match request(raw.as_bytes()) {
        Ok(head) => panic!("{raw:?} accepted: {head:?}"),
        Err(e) => e,
    }
}

fn response(raw: &[u8], method: Method) -> Result<ResponseHead, HttpError> {
    let limits = Limits::default();
    let whole = parse_response(raw, method, &limits);
    for cut in 0..raw.len() {
        let part = parse_response(&raw[..cut], method, &limits);
        match (&whole, &part) {
            (Ok(Some(head)), Ok(None)) if cut < head.head_len => {}
            (Ok(Some(head)), Ok(Some(p))) if cut >= head.head_len && p == head => {}
            (Err(_), Ok(None) | Err(_)) => {}
            _ => panic!("prefix of {cut} bytes gave {part:?}, whole gave {whole:?}"),
        }
    }
    match whole {
        Ok(Some(head)) => Ok(head),
        Ok(None) => panic!("incomplete response {:?}", String::from_utf8_lossy(raw)),
        Err(e) => Err(e),
    }
}

fn resp_ok(raw: &str, method: Method) -> ResponseHead {
    match response(raw.as_bytes(), method) {
        Ok(head) => head,
        Err(e) => panic!("{raw:?} refused: {e}"),
    }
}

fn resp_err(raw: &str, method: Method) -> HttpError {
    match response(raw.as_bytes(), method) {
        Ok(head) => panic!("{raw:?} accepted: {head:?}"),
        Err(e) => e,
    }
}

#[test]
fn simple_get_with_offsets() {
    let raw = "GET /index.html?q=1 HTTP/1.1\r\nHost: Example.COM\r\nAccept: */*\r\n\r\nNEXT";
    let head = ok(raw);
    let buf = raw.as_bytes();
    assert_eq!(head.method.of(buf), b"GET");
    assert_eq!(head.method_kind, Method::Get);
    assert_eq!(head.target.of(buf), b"/index.html?q=1");
    assert_eq!(head.target_form, TargetForm::Origin);
    assert_eq!(head.version, Version::Http11);
    assert_eq!(head.headers.len(), 2);
    assert_eq!(head.headers[0].name.of(buf), b"Host");
    assert_eq!(head.headers[0].value.of(buf), b"Example.COM");
    assert_eq!(head.header(buf, "accept"), Some(&b"*/*"[..]));
    assert_eq!(head.host.as_deref(), Some("example.com"));
    assert_eq!(head.body, RequestBody::None);
    assert!(head.keep_alive);
    assert!(!head.expect_continue);
    assert_eq!(head.upgrade, None);
    assert_eq!(&buf[head.head_len..], b"NEXT");
}

#[test]
fn captured_curl_chunked_post() {
    let head = request(CURL_CHUNKED_POST).expect("curl's request is valid");
    assert_eq!(head.method_kind, Method::Post);
    assert_eq!(head.host.as_deref(), Some("shop.example.net"));
    assert_eq!(head.body, RequestBody::Chunked);
    let body = &CURL_CHUNKED_POST[head.head_len..];
    let mut chunked = ChunkedDecoder::new();
    let progress = chunked.feed(body).expect("curl's body is valid");
    assert!(progress.done);
    assert_eq!(progress.consumed, body.len());
}

#[test]
fn host_normalisation() {
    let host = |h: &str| ok(&format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n")).host;
    assert_eq!(host("example.com").as_deref(), Some("example.com"));
    assert_eq!(host("EXAMPLE.com:8080").as_deref(), Some("example.com"));
    assert_eq!(host("example.com.").as_deref(), Some("example.com"));
    assert_eq!(host("example.com.:443").as_deref(), Some("example.com"));
    assert_eq!(host("[::1]:8080").as_deref(), Some("::1"));
    assert_eq!(host("[2001:DB8::1]").as_deref(), Some("2001:db8::1"));
    assert_eq!(host("192.0.2.7:80").as_deref(), Some("192.0.2.7"));
    assert_eq!(host("  example.com  ").as_deref(), Some("example.com"));
    assert_eq!(host("").as_deref(), None);
    // The header name is case-insensitive.
    let head = ok("GET / HTTP/1.1\r\nhOsT: a.example\r\n\r\n");
    assert_eq!(head.host.as_deref(), Some("a.example"));
}

#[test]
fn bad_hosts() {
    for h in [
        "exa mple.com",
        "example..com",
        "example.com:port",
        "[::1",
        "user@example.com",
        "example.com/",
    ] {
        let e = err(&format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n"));
        assert!(matches!(e, HttpError::InvalidHost(_)), "{h}: {e:?}");
        assert_eq!(e.status(), 400);
    }
    assert_eq!(
        err("GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"),
        HttpError::DuplicateHost
    );
    assert_eq!(
        err("GET / HTTP/1.1\r\nHost: a.example\r\nhost: a.example\r\n\r\n"),
        HttpError::DuplicateHost
    );
    assert_eq!(err("GET / HTTP/1.1\r\n\r\n"), HttpError::MissingHost);
    // HTTP/1.0 needs no Host.
    assert_eq!(ok("GET / HTTP/1.0\r\n\r\n").host, None);
}

#[test]
fn absolute_form_target_wins_over_host() {
    let head = ok("GET http://Target.Example:8080/p?q HTTP/1.1\r\nHost: other.example\r\n\r\n");
    assert_eq!(head.target_form, TargetForm::Absolute);
    assert_eq!(head.host.as_deref(), Some("target.example"));
    let head = ok("GET HTTPS://[::1]/ HTTP/1.1\r\nHost: other.example\r\n\r\n");
    assert_eq!(head.host.as_deref(), Some("::1"));
    let head = ok("GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n");
    assert_eq!(head.host.as_deref(), Some("a.example"));
    let head = ok("GET http://a.example?x HTTP/1.0\r\n\r\n");
    assert_eq!(head.host.as_deref(), Some("a.example"));
    assert!(matches!(
        err("GET http://user@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n"),
        HttpError::Malformed { .. }
    ));
    assert!(matches!(
        err("GET http:///x HTTP/1.1\r\nHost: a.example\r\n\r\n"),
        HttpError::InvalidHost(_)
    ));
    assert!(matches!(
        err("GET ftp://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n"),
        HttpError::Malformed { .. }
    ));
    // An invalid Host header is refused even when the target overrides it.
    assert!(matches!(
        err("GET http://a.example/ HTTP/1.1\r\nHost: a b\r\n\r\n"),
        HttpError::InvalidHost(_)
    ));
}

#[test]
fn other_target_forms() {
    let head = ok("OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n");
    assert_eq!(head.target_form, TargetForm::Asterisk);
    let head = ok("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n");
    assert_eq!(head.target_form, TargetForm::Authority);
    assert_eq!(head.method_kind, Method::Connect);
    err("GET * HTTP/1.1\r\nHost: a.example\r\n\r\n");
    err("GET index.html HTTP/1.1\r\nHost: a.example\r\n\r\n");
    err("CONNECT /x HTTP/1.1\r\nHost: a.example\r\n\r\n");
    // Unknown methods are tokens like any other.
    let head = ok("PROPFIND /dav HTTP/1.1\r\nHost: a.example\r\n\r\n");
    assert_eq!(head.method_kind, Method::Other);
    // Methods are case-sensitive.
    assert_eq!(
        ok("get / HTTP/1.1\r\nHost: a\r\n\r\n").method_kind,
        Method::Other
    );
}

#[test]
fn content_length() {
    let len = |v: &str| {
        ok(&format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {v}\r\n\r\n"
        ))
        .body
    };
    assert_eq!(len("0"), RequestBody::ContentLength(0));
    assert_eq!(len("42"), RequestBody::ContentLength(42));
    assert_eq!(len("0042"), RequestBody::ContentLength(42));
    assert_eq!(len("42, 42"), RequestBody::ContentLength(42));
    assert_eq!(
        len("18446744073709551615"),
        RequestBody::ContentLength(u64::MAX)
    );
    for bad in [
        "",
        "-1",
        "+1",
        "1 2",
        "0x10",
        "1.0",
        "18446744073709551616",
        "4 2",
        ",",
    ] {
        let e = err(&format!(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {bad}\r\n\r\n"
        ));
        assert!(
            matches!(e, HttpError::InvalidContentLength(_)),
            "{bad:?}: {e:?}"
        );
    }
    assert_eq!(
        err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42, 43\r\n\r\n"),
        HttpError::ConflictingContentLength(42, 43)
    );
    assert_eq!(
        err("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\n"),
        HttpError::ConflictingContentLength(1, 2)
    );
    // Duplicates that agree are one value (RFC 9110 §8.6).
    let head = ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(head.body, RequestBody::ContentLength(5));
}

#[test]
fn transfer_encoding() {
    let te = |v: &str| {
        request(format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n").as_bytes())
    };
    assert_eq!(te("chunked").map(|h| h.body), Ok(RequestBody::Chunked));
    assert_eq!(te("Chunked").map(|h| h.body), Ok(RequestBody::Chunked));
    assert_eq!(
        te("gzip, chunked").map(|h| h.body),
        Ok(RequestBody::Chunked)
    );
    assert_eq!(te(" , chunked ,").map(|h| h.body), Ok(RequestBody::Chunked));
    for bad in ["chunked, gzip", "chunked, chunked", "gzip", "", "identity"] {
        let e = te(bad).expect_err(bad);
        assert!(
            matches!(e, HttpError::InvalidTransferEncoding(_)),
            "{bad:?}: {e:?}"
        );
        assert_eq!(e.status(), 501);
    }
    // Split over two fields, the list is read as one.
    let head = ok(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert_eq!(head.body, RequestBody::Chunked);
    err(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
    );
    // Smuggling shapes (RFC 9112 §6.1, §11.2).
    assert_eq!(
        err(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        HttpError::TransferEncodingWithContentLength
    );
    assert_eq!(
        err(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
        ),
        HttpError::TransferEncodingWithContentLength
    );
    assert_eq!(
        err("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        HttpError::TransferEncodingInHttp10
    );
    // Whitespace before the colon hides the field from lenient parsers.
    err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n");
    // So does a tab or a control byte in the name.
    err("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding\t: chunked\r\n\r\n");
    err("POST / HTTP/1.1\r\nHost: a\r\n\x0bTransfer-Encoding: chunked\r\n\r\n");
}

#[test]
fn connection_and_versions() {
    assert!(ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
    assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
    assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, CLOSE\r\n\r\n").keep_alive);
    assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(!ok("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
    assert_eq!(ok("GET / HTTP/1.0\r\n\r\n").version, Version::Http10);
    for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0"] {
        let e = err(&format!("GET / {v}\r\nHost: a\r\n\r\n"));
        assert_eq!(e, HttpError::UnsupportedVersion(v.to_owned()));
        assert_eq!(e.status(), 505);
    }
    for v in ["HTTP/1", "http/1.1", "HTTP/1.1 ", "HTTP/11.1", "HTTP/1.1x"] {
        let e = err(&format!("GET / {v}\r\nHost: a\r\n\r\n"));
        assert!(matches!(e, HttpError::Malformed { .. }), "{v:?}: {e:?}");
    }
    // The HTTP/2 connection preface is a version this proxy does not speak.
    assert!(matches!(
        err("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        HttpError::UnsupportedVersion(_) | HttpError::Malformed { .. }
    ));
}

#[test]
fn expect_and_upgrade() {
    let head =
        ok("PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-Continue\r\n\r\n");
    assert!(head.expect_continue);
    assert!(!ok("PUT /f HTTP/1.1\r\nHost: a\r\nExpect: something\r\n\r\n").expect_continue);

    let raw = "GET /chat HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let head = ok(raw);
    assert_eq!(
        head.upgrade.map(|u| u.of(raw.as_bytes())),
        Some(&b"websocket"[..])
    );
    assert!(head.is_websocket(raw.as_bytes()));
    // Upgrade without "Connection: upgrade" is not a request to upgrade.
    let raw = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n";
    assert_eq!(ok(raw).upgrade, None);
    // Nor is any upgrade in HTTP/1.0 (RFC 9110 §7.8).
    let raw = "GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
    assert_eq!(ok(raw).upgrade, None);
    let raw = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c, WebSocket/13\r\nConnection: keep-alive, upgrade\r\n\r\n";
    let head = ok(raw);
    assert!(head.is_websocket(raw.as_bytes()));
    let raw = "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n";
    assert!(!ok(raw).is_websocket(raw.as_bytes()));
}

#[test]
fn header_syntax() {
    // Whitespace around values is not part of them.
    let raw = "GET / HTTP/1.1\r\nHost:a\r\nX-A: \t v a l \t\r\nX-Empty:\r\nX-Obs: café\r\n\r\n";
    let head = ok(raw);
    let buf = raw.as_bytes();
    assert_eq!(head.host.as_deref(), Some("a"));
    assert_eq!(head.header(buf, "x-a"), Some(&b"v a l"[..]));
    assert_eq!(head.header(buf, "x-empty"), Some(&b""[..]));
    assert_eq!(head.header(buf, "x-obs"), Some("café".as_bytes()));
    assert_eq!(head.header(buf, "x-missing"), None);
    for bad in [
        "GET / HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n X: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n: empty-name\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX-Cr: a\rb\r\n\r\n",
        "GET / HTTP/1.1\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\n\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\n",
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET\r\n\r\n",
        " GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        "\x16\x03\x01\x02\x00\x01\x00",
        "\r\r\n",
        "\n",
    ] {
        let e = err(bad);
        assert!(matches!(e, HttpError::Malformed { .. }), "{bad:?}: {e:?}");
        assert_eq!(e.status(), 400);
    }
}

#[test]
fn non_http_is_refused_at_the_first_byte() {
    let limits = Limits::default();
    assert!(parse_request(b"\x16", &limits).is_err());
    assert!(parse_request(b"\x00", &limits).is_err());
    assert!(parse_request(b"GET\x00", &limits).is_err());
    assert_eq!(parse_request(b"GE", &limits), Ok(None));
    assert_eq!(parse_request(b"", &limits), Ok(None));
    assert!(parse_response(b"HTTX", Method::Get, &limits).is_err());
    assert_eq!(parse_response(b"HTT", Method::Get, &limits), Ok(None));
}

#[test]
fn leading_empty_lines_are_skipped() {
    let raw = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let head = ok(raw);
    assert_eq!(head.head_len, raw.len());
    assert_eq!(head.method.of(raw.as_bytes()), b"GET");
}

#[test]
fn limits() {
    let limits = Limits {
        max_head_len: 64,
        max_headers: 3,
    };
    let fits = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    assert_eq!(fits.len(), 64);
    request_with(fits.as_bytes(), &limits).expect("exactly the limit fits");
    let over = "GET / HTTP/1.1\r\nHost: a\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let e = request_with(over.as_bytes(), &limits).expect_err("one byte over");
    assert_eq!(e, HttpError::HeadTooLarge { limit: 64 });
    assert_eq!(e.status(), 431);
    // An endless head is refused once the limit is read, not buffered.
    assert_eq!(
        parse_request(&[b'A'; 64], &limits),
        Err(HttpError::HeadTooLarge { limit: 64 })
    );
    assert_eq!(parse_request(&[b'A'; 63], &limits), Ok(None));
    assert_eq!(
        parse_request(&b"\r\n".repeat(32), &limits),
        Err(HttpError::HeadTooLarge { limit: 64 })
    );
    let many = "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    let e = request_with(many.as_bytes(), &limits).expect_err("4 headers");
    assert_eq!(e, HttpError::TooManyHeaders { limit: 3 });
    assert_eq!(e.status(), 431);
}

#[test]
fn pipelined_requests_parse_one_after_another() {
    let raw = b"GET /1 HTTP/1.1\r\nHost: a.example\r\n\r\nPOST /2 HTTP/1.1\r\nHost: b.example\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.1\r\nHost: c.example\r\n\r\n";
    let limits = Limits::default();
    let mut rest = &raw[..];
    let mut hosts = Vec::new();
    while !rest.is_empty() {
        let head = parse_request(rest, &limits)
            .expect("valid")
            .expect("complete");
        hosts.push(head.host.clone().expect("has a host"));
        let body = match head.body {
            RequestBody::ContentLength(n) => usize::try_from(n).expect("small"),
            _ => 0,
        };
        rest = &rest[head.head_len + body..];
    }
    assert_eq!(hosts, ["a.example", "b.example", "c.example"]);
}

#[test]
fn response_framing() {
    let r = resp_ok(
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        Method::Get,
    );
    assert_eq!(
        (r.status, r.body, r.keep_alive),
        (200, ResponseBody::ContentLength(5), true)
    );
    assert_eq!(r.head_len, 38);
    let raw = "HTTP/1.1 404 Not Found\r\nServer: x\r\n\r\n";
    let r = resp_ok(raw, Method::Get);
    assert_eq!(r.reason.of(raw.as_bytes()), b"Not Found");
    assert_eq!(r.header(raw.as_bytes(), "SERVER"), Some(&b"x"[..]));
    assert_eq!((r.body, r.keep_alive), (ResponseBody::UntilClose, false));
    let r = resp_ok(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        Method::Get,
    );
    assert_eq!((r.body, r.keep_alive), (ResponseBody::Chunked, true));
    let r = resp_ok(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        Method::Get,
    );
    assert_eq!((r.body, r.keep_alive), (ResponseBody::UntilClose, false));
    // No body, whatever the headers say.
    for (raw, method) in [
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
            Method::Head,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::Head,
        ),
        ("HTTP/1.1 204 No Content\r\n\r\n", Method::Get),
        (
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
            Method::Get,
        ),
        ("HTTP/1.1 100 Continue\r\n\r\n", Method::Put),
        (
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
            Method::Get,
        ),
    ] {
        let r = resp_ok(raw, method);
        assert_eq!(r.body, ResponseBody::None, "{raw:?}");
        assert!(r.keep_alive, "{raw:?}");
    }
    assert!(resp_ok("HTTP/1.1 100 Continue\r\n\r\n", Method::Put).is_interim());
    assert!(!resp_ok("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", Method::Get).is_interim());
    // Tunnels.
    let r = resp_ok(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        Method::Get,
    );
    assert_eq!(
        (r.body, r.keep_alive, r.is_interim()),
        (ResponseBody::Tunnel, false, false)
    );
    let r = resp_ok(
        "HTTP/1.1 200 Connection established\r\n\r\n",
        Method::Connect,
    );
    assert_eq!(r.body, ResponseBody::Tunnel);
    let r = resp_ok(
        "HTTP/1.1 407 Auth\r\nContent-Length: 0\r\n\r\n",
        Method::Connect,
    );
    assert_eq!(r.body, ResponseBody::ContentLength(0));
    // Connection handling.
    let r = resp_ok(
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        Method::Get,
    );
    assert!(!r.keep_alive);
    let r = resp_ok("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", Method::Get);
    assert!(!r.keep_alive);
    let r = resp_ok(
        "HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
        Method::Get,
    );
    assert!(r.keep_alive);
    // Empty reason phrases are allowed.
    assert_eq!(
        resp_ok("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", Method::Get).status,
        200
    );
    assert_eq!(
        resp_ok("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", Method::Get).status,
        200
    );
}

#[test]
fn bad_responses() {
    for raw in [
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "HTTP/1.1 20 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 099 Low\r\n\r\n",
        "HTTP/1.1 OK\r\n\r\n",
        "HTTP/1.1  200 OK\r\n\r\n",
        "HTTP/2 200\r\n\r\n",
        "HTTP/1.1 200 O\x01K\r\n\r\n",
        "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
    ] {
        resp_err(raw, Method::Get);
    }
    assert!(matches!(
        resp_err("HTTP/1.2 200 OK\r\n\r\n", Method::Get),
        HttpError::UnsupportedVersion(_)
    ));
}
