//! Serving through every node, on real ZFS (zfs-fuse in CI), with the real
//! binary and real curl on 127.0.0.1: static and command sites answer
//! through every node, large bodies stream both ways through a node that
//! is not the master, WebSocket and TLS passthrough cross the mesh, and
//! problems get clear answers.

#![allow(clippy::disallowed_methods, clippy::print_stderr)] // real processes: wall-clock deadlines, figures on stderr

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Env, Node, p, run, wait_for, zfs_available};
use serde_json::Value;

const PROXY_FLAGS: &[&str] = &["--http", "127.0.0.1:0", "--https", "127.0.0.1:0"];

fn ringhost(node: &Node, args: &[&str]) -> Output {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", p(&node.data_dir)]);
    run(&all)
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed ({:?}): {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn http_port(node: &Node) -> u16 {
    port_of(node, "http")
}

fn https_port(node: &Node) -> u16 {
    port_of(node, "https")
}

fn port_of(node: &Node, key: &str) -> u16 {
    let addr = node.ready[key][0]
        .as_str()
        .expect("ready.json lists the address");
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

/// A finished curl: status of the final response, its head and body.
struct Got {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Runs `curl -s -i ARGS` (bounded by `-m 120`).
fn curl(args: &[&str]) -> Got {
    let out = Command::new("curl")
        .args(["-s", "-i", "-m", "120"])
        .args(args)
        .output()
        .expect("curl runs");
    let mut raw = out.stdout.as_slice();
    // Skip interim (1xx) responses.
    loop {
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            return Got {
                status: 0,
                head: String::from_utf8_lossy(raw).into_owned(),
                body: Vec::new(),
            };
        };
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        raw = &raw[end + 4..];
        if (100..200).contains(&status) {
            continue;
        }
        return Got {
            status,
            head,
            body: raw.to_vec(),
        };
    }
}

/// GET `path` of `domain` through `node`'s HTTP listener.
fn get(node: &Node, domain: &str, path: &str) -> Got {
    let port = http_port(node);
    curl(&[
        "--resolve",
        &format!("{domain}:{port}:127.0.0.1"),
        &format!("http://{domain}:{port}{path}"),
    ])
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Deterministic pseudo-random bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn show(node: &Node, site: &str) -> Option<Value> {
    let out = ringhost(node, &["site", "show", site, "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

fn master_of(node: &Node, site: &str) -> String {
    wait_for(
        &format!("a master for {site}"),
        Duration::from_secs(20),
        || show(node, site).and_then(|v| v["master"].as_str().map(str::to_owned)),
    )
}

/// The master's head seq of `site`, as `node` reports it.
fn head_seq(node: &Node, site: &str) -> u64 {
    let v = show(node, site).expect("site show");
    let master = v["master"].as_str().unwrap_or_default().to_owned();
    v["copies"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["node"].as_str() == Some(&master))
                .and_then(|c| c["head"]["seq"].as_u64())
        })
        .unwrap_or(0)
}

/// Kills (SIGKILL) every process whose working directory is under `root`:
/// the command runtimes of nodes that were themselves killed. Runs on drop
/// too, so a failing test leaves no process behind.
struct Strays(PathBuf);

impl Strays {
    fn kill(&self) {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in procs.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&self.0)) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .output();
            }
        }
    }
}

impl Drop for Strays {
    fn drop(&mut self) {
        self.kill();
    }
}

const UPLOAD_PY: &str = r#"
import hashlib, http.server, os
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        h, n = hashlib.sha256(), 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    break
                left = size
                while left:
                    b = self.rfile.read(min(left, 65536))
                    h.update(b); n += len(b); left -= len(b)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                b = self.rfile.read(min(left, 65536))
                h.update(b); n += len(b); left -= len(b)
        with open("last-upload.txt", "w") as f:
            f.write(f"{h.hexdigest()} {n}\n")
        self.reply(f"{h.hexdigest()} {n}\n")
    def do_GET(self):
        self.reply("upload site\n")
    def reply(self, text):
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

const TLS_PY: &str = r#"
import http.server, os, ssl, threading
def handler(text):
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *a):
            pass
    return H
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("tls-site.pem", "tls-site.key")
tls = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["TLS_PORT"])), handler("the site's own TLS server\n"))
tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
threading.Thread(target=tls.serve_forever, daemon=True).start()
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), handler("plain http\n")).serve_forever()
"#;

/// What a site is and what it must answer.
struct SiteCase {
    name: String,
    domain: String,
    runtime: Option<String>,
    /// Files pushed (relative path, content).
    files: Vec<(String, Vec<u8>)>,
    /// Paths that must come back byte for byte through every node.
    check: Vec<(String, Vec<u8>)>,
}

fn static_case(i: u64) -> SiteCase {
    let name = format!("s{i}");
    let index = format!("<h1>site {name}</h1>\n").into_bytes();
    let data = bytes(i, 3000 + (i as usize) * 517);
    SiteCase {
        domain: format!("{name}.test"),
        runtime: None,
        files: vec![
            ("index.html".into(), index.clone()),
            ("d/data.bin".into(), data.clone()),
        ],
        check: vec![("/".into(), index), ("/d/data.bin".into(), data)],
        name,
    }
}

fn command_case(name: &str, domain: &str, cmd: &str, files: Vec<(String, Vec<u8>)>) -> SiteCase {
    SiteCase {
        name: name.into(),
        domain: domain.into(),
        runtime: Some(cmd.into()),
        files,
        check: Vec::new(),
    }
}

fn create_and_push(env: &Env, via: &Node, c: &SiteCase) {
    let mut args = vec![
        "site",
        "create",
        &c.name,
        "--domain",
        &c.domain,
        "--replicas",
        "1",
    ];
    if let Some(cmd) = &c.runtime {
        args.extend(["--runtime", "command", "--cmd", cmd]);
    }
    ok(ringhost(via, &args));
    let dir = env.path().join("content").join(&c.name);
    for (rel, data) in &c.files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("dir");
        std::fs::write(&path, data).expect("write");
    }
    std::fs::create_dir_all(&dir).expect("dir");
    ok(ringhost(via, &["site", "push", &c.name, p(&dir)]));
}

/// GETs `path` through `node` until it answers 200 with `want`.
fn expect_body(node: &Node, domain: &str, path: &str, want: &[u8], within: Duration) {
    let start = Instant::now();
    loop {
        let g = get(node, domain, path);
        if g.status == 200 && g.body == want {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{domain}{path} through {}: status {} and {} bytes (want {} bytes); head:\n{}",
            node.name,
            g.status,
            g.body.len(),
            want.len(),
            g.head
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn five_nodes_serve_twenty_sites_through_every_node_with_large_bodies_websocket_and_tls() {
    if !zfs_available("serving") {
        return;
    }
    let t0 = Instant::now();
    let env = Env::new_zfs("serve", &["n1", "n2", "n3", "n4", "n5"], "448M");
    let strays = Strays(env.path().to_owned());
    let mut nodes = env.start_cluster(5, PROXY_FLAGS);
    wait_for("5 alive members", Duration::from_secs(15), || {
        nodes
            .iter()
            .all(|n| {
                n.members()
                    .is_some_and(|m| m.iter().filter(|(_, s, _)| s == "alive").count() == 5)
            })
            .then_some(())
    });

    // A certificate for the TLS site, from a CA of its own.
    let tls_dir = env.path().join("site-tls");
    ok(run(&[
        "tls",
        "init",
        "--dir",
        p(&tls_dir),
        "--cluster",
        "site-ca",
    ]));
    ok(run(&[
        "tls",
        "issue",
        "--dir",
        p(&tls_dir),
        "--node",
        "tls-site",
    ]));
    let read = |f: &str| std::fs::read(tls_dir.join(f)).expect("tls file");

    // 20 sites: 14 static, 3 python http.server, upload, websocket, TLS.
    let mut cases: Vec<SiteCase> = (0..14).map(static_case).collect();
    let big = bytes(99, 100 << 20);
    cases[0].files.push(("big.bin".into(), big.clone()));
    for i in 0..3 {
        let text = format!("command site c{i}\n").into_bytes();
        let mut c = command_case(
            &format!("c{i}"),
            &format!("c{i}.test"),
            "exec python3 -m http.server --bind 127.0.0.1 $PORT",
            vec![("file.txt".into(), text.clone())],
        );
        c.check.push(("/file.txt".into(), text));
        cases.push(c);
    }
    let mut up = command_case(
        "upload",
        "upload.test",
        "exec python3 upload.py",
        vec![("upload.py".into(), UPLOAD_PY.into())],
    );
    up.check.push(("/".into(), b"upload site\n".to_vec()));
    cases.push(up);
    let mut ws = command_case(
        "ws",
        "ws.test",
        "exec python3 ws.py",
        vec![("ws.py".into(), common::ws::ECHO_APP.into())],
    );
    ws.check.push(("/".into(), b"ws site\n".to_vec()));
    cases.push(ws);
    let mut tls = command_case(
        "tls-site",
        "tls-site",
        "exec python3 tls.py",
        vec![
            ("tls.py".into(), TLS_PY.into()),
            ("tls-site.pem".into(), read("tls-site.pem")),
            ("tls-site.key".into(), read("tls-site.key")),
        ],
    );
    tls.check.push(("/".into(), b"plain http\n".to_vec()));
    cases.push(tls);
    assert_eq!(cases.len(), 20);

    // Create and push, four at a time, through rotating nodes.
    let t_create = Instant::now();
    std::thread::scope(|s| {
        for w in 0..4 {
            let (env, nodes, cases) = (&env, &nodes, &cases);
            s.spawn(move || {
                for (i, c) in cases.iter().enumerate().filter(|(i, _)| i % 4 == w) {
                    create_and_push(env, &nodes[i % nodes.len()], c);
                }
            });
        }
    });
    eprintln!(
        "serving: 20 sites created and pushed in {:.1}s",
        t_create.elapsed().as_secs_f64()
    );

    // Every site through every node, byte for byte.
    let t_check = Instant::now();
    for c in &cases {
        for n in &nodes {
            for (path, want) in &c.check {
                expect_body(n, &c.domain, path, want, Duration::from_secs(30));
            }
        }
    }
    eprintln!(
        "serving: 20 sites x 5 nodes checked in {:.1}s",
        t_check.elapsed().as_secs_f64()
    );

    let non_master = |site: &str| -> &Node {
        let m = master_of(&nodes[0], site);
        nodes.iter().find(|n| n.name != m).expect("a non-master")
    };

    // 100 MiB download through a node that is not the master.
    let via = non_master("s0");
    let out_path = env.path().join("big.out");
    let t = Instant::now();
    let port = http_port(via);
    let dl = Command::new("curl")
        .args(["-s", "-m", "120", "-o", p(&out_path), "-w", "%{http_code}"])
        .args(["--resolve", &format!("s0.test:{port}:127.0.0.1")])
        .arg(format!("http://s0.test:{port}/big.bin"))
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&dl.stdout), "200");
    let src_path = env.path().join("content/s0/big.bin");
    assert_eq!(sha256(&out_path), sha256(&src_path), "100 MiB download");
    eprintln!(
        "serving: 100 MiB through {} (not the master) in {:.2}s",
        via.name,
        t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_file(&out_path);

    // 20 MiB chunked upload through a node that is not the master.
    let via = non_master("upload");
    let up_path = env.path().join("upload.bin");
    std::fs::write(&up_path, bytes(7, 20 << 20)).expect("write");
    let port = http_port(via);
    let seq_before = head_seq(&nodes[0], "upload");
    let t = Instant::now();
    let g = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", p(&up_path)),
        "--resolve",
        &format!("upload.test:{port}:127.0.0.1"),
        &format!("http://upload.test:{port}/"),
    ]);
    assert_eq!(g.status, 200, "upload: {}", g.head);
    assert_eq!(
        String::from_utf8_lossy(&g.body).trim(),
        format!("{} {}", sha256(&up_path), 20 << 20),
        "the site saw exactly the uploaded bytes"
    );
    eprintln!(
        "serving: 20 MiB chunked upload through {} in {:.2}s",
        via.name,
        t.elapsed().as_secs_f64()
    );

    // The command's own write (last-upload.txt) is taken by a snapshot.
    wait_for(
        "a snapshot of the command's own write",
        Duration::from_secs(15),
        || (head_seq(&nodes[0], "upload") > seq_before).then_some(()),
    );

    // WebSocket through a node that is not the master, both ways.
    let via = non_master("ws");
    websocket_echo(http_port(via));

    // TLS passthrough through a node that is not the master: the site's
    // own server and certificate answer.
    let via = non_master("tls-site");
    let port = https_port(via);
    let start = Instant::now();
    loop {
        let out = Command::new("curl")
            .args(["-s", "-S", "-m", "20", "--cacert"])
            .arg(tls_dir.join("ca.pem"))
            .args(["--resolve", &format!("tls-site:{port}:127.0.0.1")])
            .arg(format!("https://tls-site:{port}/"))
            .output()
            .expect("curl runs");
        if out.status.success() {
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "the site's own TLS server\n"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "TLS through {}: {}",
            via.name,
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The runtime log is shown through any node.
    let log = ok(ringhost(&nodes[4], &["site", "log", "c0"]));
    assert!(log.contains("start #1"), "{log}");

    // A polite stop ends every runtime.
    for n in &mut nodes {
        assert!(n.terminate().success());
    }
    strays.kill();
    eprintln!("serving: whole test {:.1}s", t0.elapsed().as_secs_f64());
}

/// A minimal WebSocket client: handshake, a greeting from the server, an
/// echo of a client message, a close.
fn websocket_echo(port: u16) {
    let start = Instant::now();
    let mut s = loop {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let head = common::ws::handshake(&mut s, "ws.test");
        if head.starts_with("HTTP/1.1 101") {
            assert!(head.contains(common::ws::ACCEPT), "accept key: {head}");
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no upgrade: {head}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // Server to client first.
    assert_eq!(read_frame(&mut s), (1, b"hello from the site".to_vec()));
    // Client to server and back, with a payload that needs a 16-bit length.
    let msg = bytes(3, 1000);
    let text: Vec<u8> = msg.iter().map(|b| b'a' + b % 26).collect();
    common::ws::write_frame(&mut s, 1, &text);
    let mut want = b"echo: ".to_vec();
    want.extend_from_slice(&text);
    assert_eq!(read_frame(&mut s), (1, want));
    common::ws::write_frame(&mut s, 8, &[3, 232]);
    assert_eq!(read_frame(&mut s).0, 8);
}

fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    common::ws::read_frame(s)
        .expect("a frame")
        .expect("the connection is open")
}

#[test]
fn unknown_hosts_bad_requests_and_a_master_lost_without_quorum_get_clear_answers() {
    if !zfs_available("serving_errors") {
        return;
    }
    let env = Env::new_zfs("errs", &["n1", "n2", "n3"], "256M");
    let _strays = Strays(env.path().to_owned());
    let mut nodes = env.start_cluster(3, PROXY_FLAGS);
    wait_for("3 alive members", Duration::from_secs(15), || {
        nodes
            .iter()
            .all(|n| {
                n.members()
                    .is_some_and(|m| m.iter().filter(|(_, s, _)| s == "alive").count() == 3)
            })
            .then_some(())
    });
    let case = static_case(1);
    ok(ringhost(
        &nodes[0],
        &[
            "site",
            "create",
            "s1",
            "--domain",
            "s1.test",
            "--replicas",
            "3",
        ],
    ));
    let dir = env.path().join("content/s1");
    for (rel, data) in &case.files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        std::fs::write(&path, data).expect("write");
    }
    ok(ringhost(&nodes[1], &["site", "push", "s1", p(&dir)]));
    for n in &nodes {
        expect_body(n, "s1.test", "/", &case.check[0].1, Duration::from_secs(20));
    }

    // Unknown host: 404 naming the host.
    let g = get(&nodes[1], "nobody.example", "/");
    assert_eq!(g.status, 404, "{}", g.head);
    assert!(
        String::from_utf8_lossy(&g.body).contains("nobody.example"),
        "{}",
        String::from_utf8_lossy(&g.body)
    );

    // Malformed request: 400.
    let mut s = TcpStream::connect(("127.0.0.1", http_port(&nodes[1]))).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"THIS IS NOT HTTP\r\n\r\n").expect("write");
    let head = common::ws::read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");

    // The master and one more node die: the survivor sees no quorum and
    // answers 503 with Retry-After (never a hang, never a second master).
    let master = master_of(&nodes[0], "s1");
    let survivor = nodes
        .iter()
        .position(|n| n.name != master)
        .expect("a non-master");
    for (i, n) in nodes.iter_mut().enumerate() {
        if i != survivor {
            n.kill9();
        }
    }
    let survivor = &nodes[survivor];
    let start = Instant::now();
    let g = loop {
        let g = get(survivor, "s1.test", "/");
        if g.status == 503 {
            break g;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "still {} after 30 s: {}",
            g.status,
            g.head
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        g.head.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        g.head
    );
    // It stays so: no quorum, no promotion.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(get(survivor, "s1.test", "/").status, 503);
}

#[test]
fn an_http_address_in_use_exits_4_leaving_nothing_running() {
    let env = Env::new("demo", &["n1"]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let data = env.data_dir("n1");
    for flag in ["--http", "--https"] {
        let out = Command::new(common::bin())
            .args(["node", "--name", "n1", "--data-dir", p(&data)])
            .args(["--certs", p(&env.certs()), "--mesh", "127.0.0.1:0"])
            .args(["--storage", "memory", flag, &addr])
            .env("RUST_LOG", "off")
            .env_remove("RINGHOST_DATA_DIR")
            .output()
            .expect("ringhost runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].starts_with("ringhost: cannot bind") && lines[0].contains(&addr),
            "{stderr}"
        );
        assert!(!data.join("ready.json").exists());
        assert!(!data.join("admin.sock").exists());
    }
    // The data dir is free again: a node starts on it.
    let mut n = env.start("n1", &[], &["--http", "127.0.0.1:0"]);
    assert_eq!(n.ready["http"].as_array().map(Vec::len), Some(1));
    assert!(n.terminate().success());
}
