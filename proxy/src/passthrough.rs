//! TLS passthrough: read the ClientHello, route by its SNI, replay the
//! bytes read and splice. TLS is never terminated here, so the site's own
//! server and certificate answer. A connection that cannot be routed is
//! closed (there is no way to answer it without a certificate).

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tracing::{debug, info};

use crate::engine::{Proxy, TlsRoute};
use crate::gate::Pass;
use crate::splice::splice;
use crate::tls::{DEFAULT_MAX_HELLO_LEN, parse_client_hello};
use crate::tunnel::{Protocol, TunnelHeader};

pub(crate) async fn serve_tls(proxy: &Proxy, mut stream: TcpStream, peer: SocketAddr) {
    let deadline = tokio::time::Instant::now() + proxy.config().head_timeout;
    let mut buf = Vec::with_capacity(2048);
    let sni = loop {
        match parse_client_hello(&buf, DEFAULT_MAX_HELLO_LEN) {
            Ok(Some(hello)) => break hello.server_name,
            Ok(None) => {}
            Err(e) => {
                debug!(client = %peer, error = %e, "refused TLS connection");
                return;
            }
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(2048);
        }
        match timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => {
                debug!(client = %peer, "no complete ClientHello");
                return;
            }
        }
    };
    let Some(sni) = sni else {
        info!(client = %peer, "TLS connection without SNI closed");
        return;
    };
    let (mut r, mut w) = stream.split();
    match proxy.tls_route(&sni) {
        TlsRoute::Refuse(why) => {
            info!(client = %peer, %sni, why, "TLS connection closed");
        }
        TlsRoute::Local { site, addr } => {
            local(proxy, &site, addr, peer, &buf, &mut r, &mut w).await;
        }
        TlsRoute::Remote { site, node } => {
            let header = TunnelHeader {
                site,
                protocol: Protocol::Tls,
                client_addr: peer,
            };
            match proxy.open_tunnel(&node, header).await {
                Ok((mut tr, mut tw)) => {
                    if tw.write_all(&buf).await.is_ok() {
                        splice(&mut r, &mut w, &mut tr, &mut tw).await;
                    }
                }
                Err(e) => debug!(%sni, %node, error = ?e, "tunnel to master failed"),
            }
        }
    }
}

/// The master's side of a tunneled TLS connection: the ClientHello is
/// among the bytes still to come from the tunnel.
pub(crate) async fn serve_tls_tunnel<R, W>(proxy: &Proxy, header: &TunnelHeader, mut r: R, mut w: W)
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Send + Unpin,
{
    match proxy.tls_route_site(&header.site) {
        TlsRoute::Local { site, addr } => {
            local(proxy, &site, addr, header.client_addr, &[], &mut r, &mut w).await;
        }
        other => {
            info!(site = %header.site, route = ?other, "tunneled TLS connection for a site not served here closed");
        }
    }
}

async fn local<R, W>(
    proxy: &Proxy,
    site: &str,
    addr: SocketAddr,
    peer: SocketAddr,
    hello: &[u8],
    r: &mut R,
    w: &mut W,
) where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut in_flight = match proxy.gate(site).await {
        Pass::Open(g) => g,
        Pass::Redirect(node) => {
            // The site moved while this connection was held: pass it on.
            let header = TunnelHeader {
                site: site.to_owned(),
                protocol: Protocol::Tls,
                client_addr: peer,
            };
            match proxy.open_tunnel(&node, header).await {
                Ok((mut tr, mut tw)) => {
                    if hello.is_empty() || tw.write_all(hello).await.is_ok() {
                        splice(r, w, &mut tr, &mut tw).await;
                    }
                }
                Err(e) => debug!(site, %node, error = ?e, "tunnel to the new master failed"),
            }
            return;
        }
        Pass::Refused => return,
    };
    // Held by a paused gate: the site's TLS server may have moved since.
    let addr = match proxy.tls_route_site(site) {
        TlsRoute::Local { addr: now, .. } => now,
        _ => addr,
    };
    let connect = tokio::time::timeout(proxy.config().connect_timeout, TcpStream::connect(addr));
    let mut backend = match connect.await {
        Ok(Ok(s)) => s,
        _ => {
            debug!(site, %addr, "site's TLS server unreachable");
            return;
        }
    };
    let _ = backend.set_nodelay(true);
    let (mut br, mut bw) = backend.split();
    if !hello.is_empty() && bw.write_all(hello).await.is_err() {
        return;
    }
    // A migration's drain timeout closes the connection rather than let
    // it hold the pause open.
    let closed = tokio::select! {
        () = splice(r, w, &mut br, &mut bw) => false,
        () = in_flight.closing() => true,
    };
    if closed {
        debug!(site, "TLS connection closed for a site migration");
        drop(backend);
        crate::splice::end_for_migration(r, w, in_flight).await;
    }
}
