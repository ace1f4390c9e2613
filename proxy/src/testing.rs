//! Implementations of the [`Tunnels`] seam for tests, examples and
//! benchmarks. The daemon's real implementation runs over the QUIC mesh.
//!
//! - [`MemTunnels`]: in-process; `open` makes a `tokio::io::duplex` pair,
//!   writes the header's wire form into it and lets the peer [`Proxy`]
//!   read it back and serve the stream.
//! - [`TcpTunnels`] with [`serve_tcp_tunnels`]: one plain TCP connection
//!   per tunnel, header first. Unauthenticated and unencrypted: for
//!   benchmarks on loopback only.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tracing::debug;

use crate::engine::Proxy;
use crate::tunnel::{BoxFuture, BoxRead, BoxWrite, TunnelHeader, Tunnels, read_header};

/// Tunnels between [`Proxy`] instances of one process.
#[derive(Default)]
pub struct MemTunnels {
    peers: Mutex<HashMap<String, Proxy>>,
    /// The master-side tasks; dropped (aborted) with this value.
    tasks: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for MemTunnels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemTunnels").finish_non_exhaustive()
    }
}

impl MemTunnels {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `proxy` reachable as node `name`.
    pub fn add_node(&self, name: &str, proxy: Proxy) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.insert(name.to_owned(), proxy);
    }
}

impl Tunnels for MemTunnels {
    fn open<'a>(
        &'a self,
        node: &'a str,
        header: TunnelHeader,
    ) -> BoxFuture<'a, io::Result<(BoxRead, BoxWrite)>> {
        Box::pin(async move {
            let peer = {
                let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
                peers.get(node).cloned()
            };
            let Some(peer) = peer else {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("no node '{node}'"),
                ));
            };
            let wire = header
                .encode()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            // 64 KiB of buffer each way, like a QUIC stream's window.
            let (near, far) = tokio::io::duplex(crate::pool::IO_BUF);
            let (near_r, mut near_w) = tokio::io::split(near);
            near_w.write_all(&wire).await?;
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            while tasks.try_join_next().is_some() {}
            tasks.spawn(async move {
                let (mut far_r, far_w) = tokio::io::split(far);
                match read_header(&mut far_r).await {
                    Ok(h) => peer.serve_tunnel(h, far_r, far_w).await,
                    Err(e) => debug!(error = %e, "bad tunnel header"),
                }
            });
            Ok((Box::new(near_r) as BoxRead, Box::new(near_w) as BoxWrite))
        })
    }
}

/// Tunnels as plain TCP connections to each node's tunnel port.
#[derive(Debug, Default)]
pub struct TcpTunnels {
    nodes: Mutex<HashMap<String, SocketAddr>>,
}

impl TcpTunnels {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_node(&self, name: &str, addr: SocketAddr) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes.insert(name.to_owned(), addr);
    }
}

impl Tunnels for TcpTunnels {
    fn open<'a>(
        &'a self,
        node: &'a str,
        header: TunnelHeader,
    ) -> BoxFuture<'a, io::Result<(BoxRead, BoxWrite)>> {
        Box::pin(async move {
            let addr = {
                let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
                nodes.get(node).copied()
            };
            let Some(addr) = addr else {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("no node '{node}'"),
                ));
            };
            let wire = header
                .encode()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let stream = TcpStream::connect(addr).await?;
            let _ = stream.set_nodelay(true);
            let (r, mut w) = stream.into_split();
            w.write_all(&wire).await?;
            Ok((Box::new(r) as BoxRead, Box::new(w) as BoxWrite))
        })
    }
}

/// Accepts [`TcpTunnels`] connections for `proxy` until dropped.
pub async fn serve_tcp_tunnels(proxy: Proxy, listener: TcpListener) -> io::Result<()> {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        conns.spawn(async move {
            let (mut r, w) = stream.into_split();
            let header =
                tokio::time::timeout(proxy.config().head_timeout, read_header(&mut r)).await;
            match header {
                Ok(Ok(h)) => proxy.serve_tunnel(h, r, w).await,
                Ok(Err(e)) => debug!(error = %e, "bad tunnel header"),
                Err(_) => debug!("tunnel header timed out"),
            }
        });
    }
}
