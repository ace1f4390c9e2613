//! The serving engine end to end: real sockets on 127.0.0.1, two proxy
//! instances joined by in-process tunnels (node "a" is the ingress, node
//! "b" the master of the tunneled sites), independent backends (hyper,
//! tungstenite, rustls, python3) and real clients (curl, raw sockets).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use proxy::http::{Limits, Method, ResponseBody, parse_response};
use proxy::testing::MemTunnels;
use proxy::{Backend, Proxy, ProxyConfig, Routes, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

const T: Duration = Duration::from_secs(30);

/// A small, order-sensitive checksum (FNV-1a, 64 bits).
#[derive(Clone, Copy)]
struct Fnv(u64);
impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// Deterministic content: byte i of a stream is a function of i.
fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| ((offset + i) * 31 % 251) as u8)
        .collect()
}

fn pattern_sum(total: u64) -> u64 {
    let mut h = Fnv::new();
    let mut off = 0;
    while off < total {
        let n = (total - off).min(64 * 1024);
        h.update(&pattern(off, n as usize));
        off += n;
    }
    h.0
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The test backend: `/big/N` streams N pattern bytes, `/upload` answers
/// the body's length and checksum, anything else echoes the request head.
async fn backend(name: &'static str, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if let Some(n) = path.strip_prefix("/big/") {
        let total: u64 = n.parse().unwrap_or(0);
        let chunks = (0..total.div_ceil(65536)).map(move |i| {
            let off = i * 65536;
            let len = (total - off).min(65536) as usize;
            Ok::<_, Infallible>(Frame::data(Bytes::from(pattern(off, len))))
        });
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        return Ok(Response::builder()
            .header("content-length", total)
            .body(BodyExt::boxed(body))
            .expect("valid response"));
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let mut h = Fnv::new();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(d) = frame.data_ref() {
                h.update(d);
                len += d.len() as u64;
            }
        }
        return Ok(Response::new(BodyExt::boxed(Full::new(Bytes::from(
            format!("{len} {:x}", h.0),
        )))));
    }
    let mut text = format!("site={name}\n{} {}\n", req.method(), req.uri());
    for (k, v) in req.headers() {
        text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
    }
    Ok(Response::new(BodyExt::boxed(Full::new(Bytes::from(text)))))
}

async fn start_backend(tasks: &mut JoinSet<()>, name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = l.local_addr().expect("bound");
    tasks.spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((s, _)) = l.accept().await {
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |r| backend(name, r));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

struct Node {
    http: SocketAddr,
    https: SocketAddr,
    routes: watch::Sender<Arc<Routes>>,
}

struct Cluster {
    a: Node,
    b: Node,
    tasks: JoinSet<()>,
}

async fn start_node(
    tasks: &mut JoinSet<()>,
    tunnels: &Arc<MemTunnels>,
    name: &str,
    config: ProxyConfig,
) -> Node {
    let (tx, rx) = watch::channel(Arc::new(Routes::new()));
    let proxy = Proxy::new(config, rx, tunnels.clone());
    tunnels.add_node(name, proxy.clone());
    let hl = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let tl = TcpListener::bind("127.0.0.1:0").await.expect("bind https");
    let (http, https) = (
        hl.local_addr().expect("bound"),
        tl.local_addr().expect("bound"),
    );
    let p = proxy.clone();
    tasks.spawn(async move {
        let _ = p.serve_http(hl).await;
    });
    tasks.spawn(async move {
        let _ = proxy.serve_https(tl).await;
    });
    Node {
        http,
        https,
        routes: tx,
    }
}

async fn cluster(config: ProxyConfig) -> Cluster {
    let mut tasks = JoinSet::new();
    let tunnels = Arc::new(MemTunnels::new());
    let a = start_node(&mut tasks, &tunnels, "a", config.clone()).await;
    let b = start_node(&mut tasks, &tunnels, "b", config).await;
    Cluster { a, b, tasks }
}

impl Cluster {
    /// Publishes `site` as local on `b` and remote (master b) on `a`.
    fn site_on_b(&self, site: &str, domains: &[&str], backend: Backend, tls: Option<SocketAddr>) {
        self.b.routes.send_modify(|r| {
            Arc::make_mut(r)
                .insert_site(site, domains, Target::Local { backend, tls })
                .expect("valid domains")
        });
        self.a.routes.send_modify(|r| {
            Arc::make_mut(r)
                .insert_site(site, domains, Target::Remote { node: "b".into() })
                .expect("valid domains")
        });
    }

    fn site_on_a(&self, site: &str, domains: &[&str], target: Target) {
        self.a.routes.send_modify(|r| {
            Arc::make_mut(r)
                .insert_site(site, domains, target)
                .expect("valid domains")
        });
    }
}

struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Resp {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Reads one response (final, after any interim ones if `skip_interim`)
/// from `s`, keeping extra bytes in `buf`.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, method: Method) -> Resp {
    let limits = Limits::default();
    tokio::time::timeout(T, async {
        loop {
            if let Some(h) = parse_response(buf, method, &limits).expect("valid response head") {
                let head = String::from_utf8_lossy(&buf[..h.head_len]).into_owned();
                buf.drain(..h.head_len);
                let n = match h.body {
                    ResponseBody::ContentLength(n) => n as usize,
                    ResponseBody::None | ResponseBody::Tunnel => 0,
                    other => panic!("unexpected framing {other:?} in test"),
                };
                while buf.len() < n {
                    let got = s.read_buf(buf).await.expect("read body");
                    assert!(got > 0, "eof in body");
                }
                let body = buf.drain(..n).collect();
                return Resp {
                    status: h.status,
                    head,
                    body,
                };
            }
            let got = s.read_buf(buf).await.expect("read head");
            assert!(
                got > 0,
                "eof before response head; got {:?}",
                String::from_utf8_lossy(buf)
            );
        }
    })
    .await
    .expect("response in time")
}

async fn request(addr: SocketAddr, raw: &str) -> Resp {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("write");
    read_response(&mut s, &mut Vec::new(), Method::Get).await
}

/// Whether the peer closes `s` (EOF) within a few seconds.
async fn closes(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn routes_each_request_by_its_host_on_keep_alive() {
    let mut c = cluster(ProxyConfig::default()).await;
    let local = start_backend(&mut c.tasks, "local").await;
    let remote = start_backend(&mut c.tasks, "remote").await;
    c.site_on_a(
        "local",
        &["local.test"],
        Target::Local {
            backend: Backend::Tcp(local),
            tls: None,
        },
    );
    c.site_on_b("remote", &["*.wild.test"], Backend::Tcp(remote), None);

    let mut s = TcpStream::connect(c.a.http).await.expect("connect");
    let mut buf = Vec::new();
    for (host, want) in [
        ("LOCAL.Test:8080", Some("site=local")),
        ("x.wild.test", Some("site=remote")),
        ("local.test.", Some("site=local")),
        ("nope.test", None),
        ("Y.WILD.TEST", Some("site=remote")),
        ("wild.test", None),
        ("a.b.wild.test", None),
    ] {
        let req = format!("GET /p?q=1 HTTP/1.1\r\nHost: {host}\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let r = read_response(&mut s, &mut buf, Method::Get).await;
        match want {
            Some(w) => {
                assert_eq!(r.status, 200, "{host}: {}", r.text());
                assert!(r.text().starts_with(w), "{host}: {}", r.text());
                // Added once, by the node that hands the request to the backend.
                assert_eq!(
                    r.text().matches("x-forwarded-for: 127.0.0.1").count(),
                    1,
                    "{}",
                    r.text()
                );
                assert!(
                    r.text()
                        .contains("forwarded: for=127.0.0.1;proto=http;host=\""),
                    "{}",
                    r.text()
                );
            }
            None => {
                assert_eq!(r.status, 404, "{host}");
                let shown = host.to_ascii_lowercase();
                assert!(
                    r.text().contains(shown.trim_end_matches('.')),
                    "{}",
                    r.text()
                );
            }
        }
    }
    // Pipelined requests on one write come back in order.
    s.write_all(
        b"GET /1 HTTP/1.1\r\nHost: local.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: z.wild.test\r\n\r\n",
    )
    .await
    .expect("write");
    let r1 = read_response(&mut s, &mut buf, Method::Get).await;
    let r2 = read_response(&mut s, &mut buf, Method::Get).await;
    assert!(r1.text().contains("site=local\nGET /1"), "{}", r1.text());
    assert!(r2.text().contains("site=remote\nGET /2"), "{}", r2.text());
}

fn curl() -> tokio::process::Command {
    let mut c = tokio::process::Command::new("curl");
    c.args(["-sS", "--max-time", "120"]).kill_on_drop(true);
    c
}

#[tokio::test]
async fn large_download_and_chunked_upload_through_a_tunnel() {
    let mut c = cluster(ProxyConfig::default()).await;
    let be = start_backend(&mut c.tasks, "big").await;
    c.site_on_b("big", &["big.test"], Backend::Tcp(be), None);

    // 100 MiB download through node a (not the master), read by curl.
    const TOTAL: u64 = 100 * 1024 * 1024;
    let url = format!("http://big.test:{}/big/{TOTAL}", c.a.http.port());
    let mut child = curl()
        .args([
            "--resolve",
            &format!("big.test:{}:127.0.0.1", c.a.http.port()),
            &url,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl runs");
    let mut out = child.stdout.take().expect("piped stdout");
    let mut h = Fnv::new();
    let mut len = 0u64;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = out.read(&mut chunk).await.expect("read curl output");
        if n == 0 {
            break;
        }
        h.update(&chunk[..n]);
        len += n as u64;
    }
    assert!(child.wait().await.expect("curl exits").success());
    assert_eq!(len, TOTAL);
    assert_eq!(h.0, pattern_sum(TOTAL));

    // 20 MiB chunked upload (curl sends Expect: 100-continue for it too).
    const UP: u64 = 20 * 1024 * 1024;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("up.bin");
    let mut data = Vec::with_capacity(UP as usize);
    let mut off = 0;
    while off < UP {
        data.extend_from_slice(&pattern(off, 65536));
        off += 65536;
    }
    std::fs::write(&file, &data).expect("write upload file");
    let url = format!("http://big.test:{}/upload", c.a.http.port());
    let out = curl()
        .args([
            "--resolve",
            &format!("big.test:{}:127.0.0.1", c.a.http.port()),
        ])
        .args(["-H", "Transfer-Encoding: chunked", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(&url)
        .output()
        .await
        .expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{UP} {:x}", pattern_sum(UP))
    );
}

#[tokio::test]
async fn expect_100_continue_is_relayed() {
    let mut c = cluster(ProxyConfig::default()).await;
    let be = start_backend(&mut c.tasks, "up").await;
    c.site_on_b("up", &["up.test"], Backend::Tcp(be), None);
    let mut s = TcpStream::connect(c.a.http).await.expect("connect");
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: up.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .expect("write head");
    let mut buf = Vec::new();
    let cont = tokio::time::timeout(T, async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(s.read_buf(&mut buf).await.expect("read") > 0);
        }
    });
    cont.await.expect("100 Continue in time");
    assert!(
        buf.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("found above")
        + 4;
    buf.drain(..end);
    s.write_all(b"hello").await.expect("write body");
    let r = read_response(&mut s, &mut buf, Method::Post).await;
    let mut h = Fnv::new();
    h.update(b"hello");
    assert_eq!(r.text(), format!("5 {:x}", h.0));
}

#[tokio::test]
async fn websocket_echo_through_a_tunnel() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut c = cluster(ProxyConfig::default()).await;
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let ws_addr = l.local_addr().expect("bound");
    c.tasks.spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() || m.is_binary() {
                        let _ = ws.send(m).await;
                    }
                }
            });
        }
    });
    c.site_on_b("ws", &["ws.test"], Backend::Tcp(ws_addr), None);
    let s = TcpStream::connect(c.a.http).await.expect("connect");
    let (mut ws, resp) = tokio_tungstenite::client_async("ws://ws.test/chat", s)
        .await
        .expect("websocket handshake through the proxy");
    assert_eq!(resp.status(), 101);
    for i in 0..50u32 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.expect("send");
        let back = tokio::time::timeout(T, ws.next())
            .await
            .expect("echo in time");
        assert_eq!(back.expect("open").expect("frame"), Message::text(text));
    }
    let big = vec![7u8; 1 << 20];
    ws.send(Message::binary(big.clone()))
        .await
        .expect("send big");
    let back = tokio::time::timeout(T, ws.next())
        .await
        .expect("echo in time");
    assert_eq!(
        back.expect("open").expect("frame").into_data().len(),
        big.len()
    );
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn tls_passthrough_by_sni_reaches_the_sites_own_server() {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut c = cluster(ProxyConfig::default()).await;
    let cert = rcgen::generate_simple_self_signed(vec!["secure.test".into()]).expect("cert");
    let cert_der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der()));
    let server_cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let tls_addr = l.local_addr().expect("bound");
    c.tasks.spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let n = tls.read(&mut buf).await.unwrap_or(0);
                let body = format!("tls site saw {} bytes", n);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let unused = start_backend(&mut c.tasks, "secure").await;
    c.site_on_b(
        "secure",
        &["secure.test"],
        Backend::Tcp(unused),
        Some(tls_addr),
    );

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der.clone()).expect("add root");
    let client_cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_cfg));
    for https in [c.a.https, c.b.https] {
        let s = TcpStream::connect(https).await.expect("connect");
        let name = ServerName::try_from("secure.test").expect("valid name");
        let mut tls = tokio::time::timeout(T, connector.connect(name, s))
            .await
            .expect("handshake in time")
            .expect("handshake with the site's own certificate");
        let seen = tls.get_ref().1.peer_certificates().expect("server cert")[0].clone();
        assert_eq!(seen, cert_der);
        tls.write_all(b"GET / HTTP/1.1\r\nHost: secure.test\r\n\r\n")
            .await
            .expect("write");
        let mut out = Vec::new();
        let _ = tokio::time::timeout(T, tls.read_to_end(&mut out)).await;
        assert!(
            String::from_utf8_lossy(&out).contains("tls site saw"),
            "{:?}",
            String::from_utf8_lossy(&out)
        );
    }

    // curl through the non-master node, trusting only the site's certificate.
    let dir = tempfile::tempdir().expect("tempdir");
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, cert.cert.pem()).expect("write pem");
    let port = c.a.https.port();
    let out = curl()
        .args(["--cacert"])
        .arg(&pem)
        .args(["--resolve", &format!("secure.test:{port}:127.0.0.1")])
        .arg(format!("https://secure.test:{port}/"))
        .output()
        .await
        .expect("curl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tls site saw"));

    // Unknown SNI: closed without an answer.
    let s = TcpStream::connect(c.a.https).await.expect("connect");
    let name = ServerName::try_from("other.test").expect("valid name");
    let r = tokio::time::timeout(T, connector.connect(name, s))
        .await
        .expect("closed in time");
    assert!(r.is_err());
}

#[tokio::test]
async fn static_runtime_features_and_containment() {
    let c = cluster(ProxyConfig::default()).await;
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret.txt"), "outside").expect("write");
    let site = tempfile::tempdir().expect("tempdir");
    let root = site.path();
    std::fs::write(root.join("index.html"), "<h1>home</h1>").expect("write");
    std::fs::write(root.join("style.css"), "body{}").expect("write");
    std::fs::create_dir(root.join("docs")).expect("mkdir");
    std::fs::write(root.join("docs/index.html"), "docs").expect("write");
    std::fs::write(root.join("data.bin"), pattern(0, 1000)).expect("write");
    std::fs::write(root.join("with space.txt"), "spaced").expect("write");
    std::fs::create_dir(root.join(".ringhost")).expect("mkdir");
    std::fs::write(root.join(".ringhost/site.toml"), "private").expect("write");
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.join("escape.txt"))
        .expect("symlink");
    std::os::unix::fs::symlink(outside.path(), root.join("outdir")).expect("symlink");
    std::os::unix::fs::symlink(root.join(".ringhost/site.toml"), root.join("spec.txt"))
        .expect("symlink");
    std::fs::write(root.join("inner.txt"), "inner").expect("write");
    std::os::unix::fs::symlink(root.join("inner.txt"), root.join("link.txt")).expect("symlink");
    c.site_on_b(
        "files",
        &["files.test"],
        Backend::Static(root.to_path_buf()),
        None,
    );

    let get =
        |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: files.test\r\n{extra}\r\n");
    for node in [c.b.http, c.a.http] {
        let r = request(node, &get("/", "")).await;
        assert_eq!((r.status, r.text().as_str()), (200, "<h1>home</h1>"));
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("text/html; charset=utf-8")
        );
        let r = request(node, &get("/style.css", "")).await;
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("text/css; charset=utf-8")
        );
        let r = request(node, &get("/docs", "")).await;
        assert_eq!(
            (r.status, r.header("location").as_deref()),
            (301, Some("/docs/"))
        );
        assert_eq!(request(node, &get("/docs/", "")).await.text(), "docs");
        assert_eq!(
            request(node, &get("/with%20space.txt", "")).await.text(),
            "spaced"
        );
        assert_eq!(request(node, &get("/link.txt", "")).await.text(), "inner");

        let r = request(node, &get("/data.bin", "Range: bytes=10-19\r\n")).await;
        assert_eq!(r.status, 206);
        assert_eq!(r.body, pattern(10, 10));
        assert_eq!(
            r.header("content-range").as_deref(),
            Some("bytes 10-19/1000")
        );
        let r = request(node, &get("/data.bin", "Range: bytes=-5\r\n")).await;
        assert_eq!((r.status, r.body.clone()), (206, pattern(995, 5)));
        let r = request(node, &get("/data.bin", "Range: bytes=1000-\r\n")).await;
        assert_eq!(r.status, 416);
        assert_eq!(r.header("content-range").as_deref(), Some("bytes */1000"));

        let full = request(node, &get("/data.bin", "")).await;
        assert_eq!(full.body, pattern(0, 1000));
        let etag = full.header("etag").expect("etag");
        let lm = full.header("last-modified").expect("last-modified");
        let r = request(
            node,
            &get("/data.bin", &format!("If-None-Match: {etag}\r\n")),
        )
        .await;
        assert_eq!((r.status, r.body.len()), (304, 0));
        let r = request(
            node,
            &get("/data.bin", &format!("If-Modified-Since: {lm}\r\n")),
        )
        .await;
        assert_eq!(r.status, 304);
        let r = request(
            node,
            &get(
                "/data.bin",
                "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n",
            ),
        )
        .await;
        assert_eq!(r.status, 200);
        let r = request(
            node,
            &get("/data.bin", "If-Range: \"stale\"\r\nRange: bytes=0-1\r\n"),
        )
        .await;
        assert_eq!(r.status, 200);

        let mut s = TcpStream::connect(node).await.expect("connect");
        s.write_all(b"HEAD /data.bin HTTP/1.1\r\nHost: files.test\r\n\r\n")
            .await
            .expect("write");
        let r = read_response(&mut s, &mut Vec::new(), Method::Head).await;
        assert_eq!(
            (r.status, r.header("content-length").as_deref()),
            (200, Some("1000"))
        );

        for bad in [
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/docs/%2E%2E/%2E%2E/secret.txt",
            "/..%2fsecret.txt",
            "/escape.txt",
            "/outdir/secret.txt",
            "/.ringhost/site.toml",
            "/.RINGHOST/site.toml",
            "/%2eringhost/site.toml",
            "/spec.txt",
            "/missing",
        ] {
            let r = request(node, &get(bad, "")).await;
            assert!(matches!(r.status, 400 | 404), "{bad}: {}", r.status);
            assert!(
                !r.text().contains("outside") && !r.text().contains("private"),
                "{bad}"
            );
        }
        let r = request(
            node,
            "POST / HTTP/1.1\r\nHost: files.test\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert_eq!(r.status, 405);
    }
}

#[tokio::test]
async fn error_answers() {
    let config = ProxyConfig {
        head_timeout: Duration::from_millis(500),
        ..ProxyConfig::default()
    };
    let c = cluster(config).await;
    c.site_on_a(
        "down",
        &["down.test"],
        Target::Unavailable { retry_after_s: 7 },
    );
    // A port nothing listens on.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("bound")
    };
    c.site_on_a(
        "refused",
        &["refused.test"],
        Target::Local {
            backend: Backend::Tcp(closed),
            tls: None,
        },
    );
    c.site_on_a(
        "gone",
        &["gone.test"],
        Target::Remote {
            node: "nowhere".into(),
        },
    );

    let r = request(c.a.http, "GET / HTTP/1.1\r\nHost: down.test\r\n\r\n").await;
    assert_eq!(
        (r.status, r.header("retry-after").as_deref()),
        (503, Some("7"))
    );
    let r = request(c.a.http, "GET / HTTP/1.1\r\nHost: refused.test\r\n\r\n").await;
    assert_eq!(r.status, 502);
    let r = request(c.a.http, "GET / HTTP/1.1\r\nHost: gone.test\r\n\r\n").await;
    assert_eq!(r.status, 502);
    let r = request(c.a.http, "GET / HTTP/1.1\r\nHost: unknown.test\r\n\r\n").await;
    assert_eq!(r.status, 404);
    assert!(r.text().contains("unknown.test"));
    let big = format!(
        "GET / HTTP/1.1\r\nHost: down.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert_eq!(request(c.a.http, &big).await.status, 431);
    for bad in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "\x16\x03\x01\x00\x05hello",
        "GET / HTTP/1.1\r\nHost: x.test\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\nHost: x.test\n\n",
    ] {
        let r = request(c.a.http, bad).await;
        assert_eq!(r.status, 400, "{bad:?}");
    }

    // Slowloris: an incomplete head gets 408 and the connection closes.
    let mut s = TcpStream::connect(c.a.http).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: down.test\r\n")
        .await
        .expect("write");
    let r = read_response(&mut s, &mut Vec::new(), Method::Get).await;
    assert_eq!(r.status, 408);
    assert!(closes(&mut s).await);
    // A connection that sends nothing is answered 408 too, then closed.
    let mut s = TcpStream::connect(c.a.http).await.expect("connect");
    let r = read_response(&mut s, &mut Vec::new(), Method::Get).await;
    assert_eq!(r.status, 408);
    assert!(closes(&mut s).await);
}

#[tokio::test]
async fn connections_over_the_limit_wait_until_one_ends() {
    let config = ProxyConfig {
        max_connections: 2,
        ..ProxyConfig::default()
    };
    let c = cluster(config).await;
    c.site_on_a(
        "down",
        &["down.test"],
        Target::Unavailable { retry_after_s: 1 },
    );
    // Idle clients hold the slots (a request on each proves it was
    // accepted; keep-alive keeps it open): the limit, plus one that the
    // node's other listener (HTTPS, idle) lends this one.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(c.a.http).await.expect("connect");
        s.write_all(b"GET / HTTP/1.1\r\nHost: down.test\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(
            read_response(&mut s, &mut Vec::new(), Method::Get)
                .await
                .status,
            503
        );
        held.push(s);
    }
    // The next waits in the listen backlog: no answer while all are held.
    let mut s = TcpStream::connect(c.a.http).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: down.test\r\n\r\n")
        .await
        .expect("write");
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), s.read(&mut byte))
            .await
            .is_err(),
        "answered over the limit"
    );
    // One ends: the waiting client is accepted and answered.
    drop(held.pop());
    assert_eq!(
        read_response(&mut s, &mut Vec::new(), Method::Get)
            .await
            .status,
        503
    );
}

#[test]
fn connection_limit_leaves_descriptors_for_the_rest_of_the_node() {
    use proxy::fit_to_fd_limit;
    assert_eq!(fit_to_fd_limit(16_384, 1_048_576), 16_384);
    // 20,000 descriptors: a quarter stays for the node.
    assert_eq!(fit_to_fd_limit(16_384, 20_000), 15_000);
    // 2,048: 1,024 stay.
    assert_eq!(fit_to_fd_limit(16_384, 2_048), 1_024);
    // A small limit keeps half of it for the node.
    assert_eq!(fit_to_fd_limit(16_384, 1_024), 512);
    assert_eq!(fit_to_fd_limit(16_384, 0), 1);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let config = ProxyConfig {
        idle_timeout: Duration::from_millis(300),
        ..ProxyConfig::default()
    };
    let c = cluster(config).await;
    c.site_on_a(
        "down",
        &["down.test"],
        Target::Unavailable { retry_after_s: 1 },
    );
    let mut s = TcpStream::connect(c.a.http).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: down.test\r\n\r\n")
        .await
        .expect("write");
    let r = read_response(&mut s, &mut Vec::new(), Method::Get).await;
    assert_eq!(r.status, 503);
    assert!(closes(&mut s).await);
}

#[tokio::test]
async fn command_runtime_serves_and_is_restarted_after_kill() {
    use proxy::runtime::{CommandRuntime, CommandSpec};
    let c = cluster(ProxyConfig::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hello.txt"), "from python").expect("write");
    let log = dir.path().join("runtime.log");
    let mut spec = CommandSpec::new(
        "exec python3 -m http.server --bind 127.0.0.1 $PORT",
        dir.path(),
        &log,
    );
    spec.backoff_min = Duration::from_millis(100);
    let rt = CommandRuntime::start(spec).expect("start");
    let pid = rt.wait_running(T).await.expect("running");
    c.site_on_b("py", &["py.test"], Backend::Tcp(rt.addr()), None);
    let r = request(c.a.http, "GET /hello.txt HTTP/1.1\r\nHost: py.test\r\n\r\n").await;
    assert_eq!((r.status, r.text().as_str()), (200, "from python"));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the runtime by pid");
    let mut states = rt.subscribe();
    let new_pid = tokio::time::timeout(
        T,
        states.wait_for(
            |s| matches!(s, proxy::runtime::RuntimeState::Running { pid: p, .. } if *p != pid),
        ),
    )
    .await
    .expect("restarted in time")
    .expect("supervisor alive")
    .clone();
    assert!(matches!(
        new_pid,
        proxy::runtime::RuntimeState::Running { attempt: 2, .. }
    ));
    let r = request(c.a.http, "GET /hello.txt HTTP/1.1\r\nHost: py.test\r\n\r\n").await;
    assert_eq!((r.status, r.text().as_str()), (200, "from python"));
    rt.stop().await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("start #2"), "{text}");
    assert!(
        text.contains("GET /hello.txt"),
        "python's own output is kept: {text}"
    );
    assert!(text.contains("stopped"));
    // The process is gone: its port refuses.
    assert!(
        TcpStream::connect(("127.0.0.1", rt_port(&log)))
            .await
            .is_err()
    );
}

fn rt_port(log: &std::path::Path) -> u16 {
    let text = std::fs::read_to_string(log).expect("log");
    let at = text.find("PORT=").expect("port logged") + 5;
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("port")
}
