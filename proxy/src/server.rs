//! The listeners and the master side of tunnels: each accepted connection
//! and each tunnel stream goes to its protocol (`h1` for HTTP/1.1,
//! `passthrough` for TLS). The connection limit of
//! [`ProxyConfig::max_connections`] is held here.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::engine::Proxy;
#[cfg(doc)]
use crate::engine::ProxyConfig;
use crate::tunnel::{Protocol, TunnelHeader};

/// Takes back the permit a listener added when it stops.
struct ListenerPermit(Arc<Semaphore>);

impl Drop for ListenerPermit {
    fn drop(&mut self) {
        self.0.forget_permits(1);
    }
}

impl Proxy {
    /// Serves HTTP/1.1 on `listener` until the returned future is dropped
    /// (which also ends every connection it accepted). Returns only on a
    /// listener error that retrying cannot fix.
    pub async fn serve_http(&self, listener: TcpListener) -> io::Result<()> {
        self.accept_loop(listener, |proxy, stream, peer| async move {
            let (r, w) = stream.into_split();
            crate::h1::serve_connection(&proxy, r, w, peer, None).await;
        })
        .await
    }

    /// Serves TLS passthrough on `listener`, routed by SNI, until dropped.
    pub async fn serve_https(&self, listener: TcpListener) -> io::Result<()> {
        self.accept_loop(listener, |proxy, stream, peer| async move {
            crate::passthrough::serve_tls(&proxy, stream, peer).await;
        })
        .await
    }

    async fn accept_loop<F, Fut>(&self, listener: TcpListener, handle: F) -> io::Result<()>
    where
        F: Fn(Proxy, TcpStream, SocketAddr) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        // Owning the connection tasks here means dropping this future ends
        // them all: nothing outlives the listener.
        if let Ok(addr) = listener.local_addr() {
            info!(%addr, "listening");
        }
        let mut conns = JoinSet::new();
        // The permit a listener holds while it waits in `accept` is its
        // own: each listener adds one, so a listener waiting for clients
        // does not lower the limit of the others (which may then exceed it
        // by one less than the number of listeners).
        let slots = self.inner.connections.clone();
        slots.add_permits(1);
        let _own = ListenerPermit(slots.clone());
        let mut last_full = None;
        loop {
            while conns.try_join_next().is_some() {}
            let permit = match slots.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // At most one warning a minute while the limit holds.
                    let now = tokio::time::Instant::now();
                    if last_full.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60)) {
                        last_full = Some(now);
                        warn!(
                            limit = self.inner.config.max_connections,
                            "client connection limit reached; accepting again as connections end"
                        );
                    }
                    // Invariant: the semaphore is never closed.
                    slots.clone().acquire_owned().await.expect("never closed")
                }
            };
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) if is_transient_accept_error(&e) => {
                    warn!(error = %e, "accept failed; retrying shortly");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Small heads and responses must not wait for Nagle.
            let _ = stream.set_nodelay(true);
            let conn = handle(self.clone(), stream, peer);
            conns.spawn(async move {
                conn.await;
                drop(permit);
            });
        }
    }

    /// Handles a stream that another node opened to this one (the master
    /// side of [`crate::Tunnels::open`]), after its header was read. Returns when
    /// the stream is done.
    pub async fn serve_tunnel<R, W>(&self, header: TunnelHeader, reader: R, writer: W)
    where
        R: AsyncRead + Send + Unpin,
        W: AsyncWrite + Send + Unpin,
    {
        debug!(site = %header.site, client = %header.client_addr, protocol = ?header.protocol, "tunnel in");
        match header.protocol {
            Protocol::Http => {
                crate::h1::serve_connection(
                    self,
                    reader,
                    writer,
                    header.client_addr,
                    Some(header.site),
                )
                .await
            }
            Protocol::Tls => {
                crate::passthrough::serve_tls_tunnel(self, &header, reader, writer).await
            }
        }
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    // Out of descriptors or a connection reset before accept: the listener
    // itself is fine.
    !matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::NotConnected | io::ErrorKind::Unsupported
    )
}
