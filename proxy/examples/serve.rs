//! Runs the serving engine with a static routes file, for benchmarks and
//! manual tests (the daemon wires the same engine to gossip and QUIC).
//!
//! ```text
//! cargo run --release -p proxy --example serve -- --routes FILE --http ADDR
//!     [--https ADDR] [--tunnel-listen ADDR] [--peer NODE=ADDR]...
//! ```
//!
//! Routes file, one site per line (`#` comments):
//!
//! ```text
//! # site  domains          target
//! bench   bench.test       tcp 127.0.0.1:8081 [tls 127.0.0.1:8443]
//! files   *.files.test     static /srv/files
//! other   other.test       remote NODE
//! down    down.test        unavailable 5
//! ```
//!
//! Tunnels are plain TCP ([`proxy::testing::TcpTunnels`]): loopback
//! benchmarks only, never a real network.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::Arc;

use proxy::testing::{TcpTunnels, serve_tcp_tunnels};
use proxy::{Backend, Proxy, ProxyConfig, Routes, Target};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

fn parse_routes(text: &str) -> Result<Routes, Box<dyn Error>> {
    let mut routes = Routes::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("routes line {}: '{line}'", n + 1);
        let (site, domains) = match words.as_slice() {
            [site, domains, ..] => (*site, domains.split(',').collect::<Vec<_>>()),
            _ => return Err(bad().into()),
        };
        let target = match &words[2..] {
            ["tcp", addr] => Target::Local {
                backend: Backend::Tcp(addr.parse()?),
                tls: None,
            },
            ["tcp", addr, "tls", tls] => Target::Local {
                backend: Backend::Tcp(addr.parse()?),
                tls: Some(tls.parse()?),
            },
            ["static", dir] => Target::Local {
                backend: Backend::Static(dir.into()),
                tls: None,
            },
            ["remote", node] => Target::Remote {
                node: (*node).to_owned(),
            },
            ["unavailable", secs] => Target::Unavailable {
                retry_after_s: secs.parse()?,
            },
            _ => return Err(bad().into()),
        };
        routes.insert_site(site, &domains, target)?;
    }
    Ok(routes)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let (mut routes_file, mut http, mut https, mut tunnel_listen) = (None, None, None, None);
    let tunnels = Arc::new(TcpTunnels::new());
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--routes" => routes_file = Some(value),
            "--http" => http = Some(value.parse::<SocketAddr>()?),
            "--https" => https = Some(value.parse::<SocketAddr>()?),
            "--tunnel-listen" => tunnel_listen = Some(value.parse::<SocketAddr>()?),
            "--peer" => {
                let (node, addr) = value.split_once('=').ok_or("--peer NODE=ADDR")?;
                tunnels.add_node(node, addr.parse()?);
            }
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    let routes = parse_routes(&std::fs::read_to_string(
        routes_file.ok_or("--routes FILE is required")?,
    )?)?;
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(routes));
    let proxy = Proxy::new(ProxyConfig::default(), rx, tunnels);
    let mut tasks = JoinSet::new();
    if let Some(addr) = http {
        let l = TcpListener::bind(addr).await?;
        let p = proxy.clone();
        tasks.spawn(async move { p.serve_http(l).await });
    }
    if let Some(addr) = https {
        let l = TcpListener::bind(addr).await?;
        let p = proxy.clone();
        tasks.spawn(async move { p.serve_https(l).await });
    }
    if let Some(addr) = tunnel_listen {
        let l = TcpListener::bind(addr).await?;
        let p = proxy.clone();
        tasks.spawn(async move { serve_tcp_tunnels(p, l).await });
    }
    // Runs until killed; a listener that fails ends the process.
    if let Some(res) = tasks.join_next().await {
        res??;
    }
    Ok(())
}
