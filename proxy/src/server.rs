//! The serving engine: listeners, the per-request HTTP path, TLS
//! passthrough and the master side of tunnels.
//!
//! Every connection, whether it arrived on a listener of this node or
//! through a tunnel from another node, ends in one of two places on the
//! site's master: [`Proxy::gate`] (the per-site gate, for HTTP requests and
//! TLS connections alike) and then the site's local backend. A node that is
//! not the master only finds the site and forwards.
//!
//! Memory per connection is bounded: a request head is at most
//! [`Limits::max_head_len`] bytes, bodies move through fixed 64 KiB
//! buffers allocated only while a body is moving, and an idle client
//! connection holds a few KiB. The number of client connections is bounded
//! too ([`ProxyConfig::max_connections`]), and a connection that never
//! completes a request head is closed after [`ProxyConfig::head_timeout`],
//! so idle or slow clients cannot exhaust memory or file descriptors
//! (`scripts/bench-idle.sh` measures it).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::gate::InFlight;
use crate::http::Limits;
use crate::pool::{Pool, Upstream, UpstreamKey};
use crate::routes::{Routes, Target};
use crate::tunnel::{BoxRead, BoxWrite, Protocol, TunnelHeader, Tunnels};

/// Bounds and timeouts of the engine.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub limits: Limits,
    /// A request head must be complete this long after its first byte (for
    /// the first request: after the connection was accepted); else 408.
    pub head_timeout: Duration,
    /// An idle keep-alive connection is closed after this long.
    pub idle_timeout: Duration,
    /// Connecting to a backend or opening a tunnel.
    pub connect_timeout: Duration,
    /// From the end of the request head to the response head (504 after).
    pub response_timeout: Duration,
    /// A body (either way) that makes no progress for this long is cut.
    pub io_timeout: Duration,
    /// Kept-alive backend connections per backend address.
    pub pool_max_idle: usize,
    pub pool_idle_timeout: Duration,
    /// Bounds of a paused site gate (live migration).
    pub gate: crate::gate::GateLimits,
    /// Client connections held at once over all HTTP and HTTPS listeners
    /// (tunnels from other nodes are mesh streams, bounded by the mesh).
    /// At the limit the listeners stop accepting until a connection ends:
    /// new clients wait in the kernel's listen backlog. With several
    /// listeners, up to one connection per extra listener more. Use
    /// [`fit_to_fd_limit`] so the limit leaves file descriptors for the
    /// rest of the node.
    pub max_connections: usize,
}

/// Takes back the permit a listener added when it stops.
struct ListenerPermit(Arc<Semaphore>);

impl Drop for ListenerPermit {
    fn drop(&mut self) {
        self.0.forget_permits(1);
    }
}

/// The default of [`ProxyConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// File descriptors kept, at least, for everything but client connections.
const FD_RESERVE: u64 = 1024;

/// Raises the soft limit on open files to the hard limit (as Go and nginx
/// do at start). Returns the soft limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
        return Ok(hard);
    }
    Ok(soft)
}

/// `wanted` client connections, lowered to what the soft limit on open
/// files (`fd_limit`) can hold while a quarter of it (at least 1024, but
/// never more than half) stays for the rest of the node: backend
/// connections of requests in flight and the pool, site files, pipes to
/// `zfs`, the mesh, logs. Should backends still run out of descriptors, a
/// request gets a 502; the node's own work goes on.
pub fn fit_to_fd_limit(wanted: usize, fd_limit: u64) -> usize {
    let room = (fd_limit / 4 * 3)
        .min(fd_limit.saturating_sub(FD_RESERVE))
        .max(fd_limit / 2);
    wanted
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            limits: Limits::default(),
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(120),
            pool_max_idle: 256,
            pool_idle_timeout: Duration::from_secs(30),
            gate: crate::gate::GateLimits::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The engine of one node. Cheap to clone; clones share routes, tunnels
/// and the backend connection pool.
#[derive(Clone)]
pub struct Proxy {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: ProxyConfig,
    routes: watch::Receiver<Arc<Routes>>,
    pub tunnels: Arc<dyn Tunnels>,
    pub pool: Pool,
    pub gates: crate::gate::Gates,
    /// One permit per client connection, shared by every listener.
    connections: Arc<Semaphore>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.inner.config)
            .field("idle_upstreams", &self.inner.pool.idle_len())
            .finish()
    }
}

impl Proxy {
    pub fn new(
        config: ProxyConfig,
        routes: watch::Receiver<Arc<Routes>>,
        tunnels: Arc<dyn Tunnels>,
    ) -> Proxy {
        let pool = Pool::new(config.pool_max_idle, config.pool_idle_timeout);
        let gates = crate::gate::Gates::new(config.gate);
        let connections = Arc::new(Semaphore::new(config.max_connections.max(1)));
        Proxy {
            inner: Arc::new(Inner {
                gates,
                connections,
                config,
                routes,
                tunnels,
                pool,
            }),
        }
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.inner.config
    }

    /// The per-site gates: pause, drain, redirect (live migration).
    pub fn gates(&self) -> &crate::gate::Gates {
        &self.inner.gates
    }

    /// The latest routing snapshot.
    pub fn routes(&self) -> Arc<Routes> {
        self.inner.routes.borrow().clone()
    }

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
    /// side of [`Tunnels::open`]), after its header was read. Returns when
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

    /// THE PER-SITE GATE. Every HTTP request and every TLS connection that
    /// this node serves as the site's master passes here first, whether it
    /// arrived directly or through a tunnel, just before it reaches the
    /// site's backend: open (counted in flight), paused (queued, bounded)
    /// or redirected to the site's new master ([`crate::gate`]). Keep this
    /// the only way to the local backend.
    pub(crate) async fn gate(&self, site: &str) -> crate::gate::Pass {
        self.inner.gates.pass(site).await
    }

    /// A backend connection: from the pool, or a new one.
    pub(crate) async fn connect_backend(&self, addr: SocketAddr) -> Result<Upstream, ConnectError> {
        if let Some(up) = self.inner.pool.take(&UpstreamKey::Tcp(addr)) {
            return Ok(up);
        }
        let stream =
            tokio::time::timeout(self.inner.config.connect_timeout, TcpStream::connect(addr))
                .await
                .map_err(|_| ConnectError::Timeout)?
                .map_err(ConnectError::Io)?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        Ok(Upstream::new(Box::new(r), Box::new(w)))
    }

    /// A new tunnel to `node`.
    pub(crate) async fn open_tunnel(
        &self,
        node: &str,
        header: TunnelHeader,
    ) -> Result<(BoxRead, BoxWrite), ConnectError> {
        tokio::time::timeout(
            self.inner.config.connect_timeout,
            self.inner.tunnels.open(node, header),
        )
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(ConnectError::Io)
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Where a TLS connection for server name `sni` goes from this node.
    pub(crate) fn tls_route(&self, sni: &str) -> TlsRoute {
        let routes = self.routes();
        match routes.site_for_host(sni) {
            None => TlsRoute::Refuse("unknown server name"),
            Some(site) => Self::tls_target(site, routes.target(site)),
        }
    }

    /// Where a TLS connection for `site` goes from this node.
    pub(crate) fn tls_route_site(&self, site: &str) -> TlsRoute {
        Self::tls_target(site, self.routes().target(site))
    }

    fn tls_target(site: &str, target: Option<&Target>) -> TlsRoute {
        match target {
            None => TlsRoute::Refuse("site has no target"),
            Some(Target::Local {
                tls: Some(addr), ..
            }) => TlsRoute::Local {
                site: site.to_owned(),
                addr: *addr,
            },
            Some(Target::Local { tls: None, .. }) => TlsRoute::Refuse("site serves no TLS"),
            Some(Target::Remote { node }) => TlsRoute::Remote {
                site: site.to_owned(),
                node: node.clone(),
            },
            Some(Target::Unavailable { .. }) => TlsRoute::Refuse("site's master unknown"),
        }
    }
}

#[derive(Debug)]
pub(crate) enum TlsRoute {
    Refuse(&'static str),
    Local { site: String, addr: SocketAddr },
    Remote { site: String, node: String },
}

#[derive(Debug)]
pub(crate) enum ConnectError {
    Timeout,
    Io(io::Error),
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    // Out of descriptors or a connection reset before accept: the listener
    // itself is fine.
    !matches!(
        e.kind(),
        io::ErrorKind::InvalidInput | io::ErrorKind::NotConnected | io::ErrorKind::Unsupported
    )
}

/// Copies `r` to `w` with a 64 KiB buffer until EOF, then shuts `w` down.
pub(crate) async fn copy_half<R, W>(r: &mut R, w: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; crate::pool::IO_BUF];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

/// Splices two byte streams both ways until both directions ended. A
/// half-close is passed on; an error on either direction ends both.
pub(crate) async fn splice<R1, W1, R2, W2>(ar: &mut R1, aw: &mut W1, br: &mut R2, bw: &mut W2)
where
    R1: AsyncRead + Unpin + ?Sized,
    W1: AsyncWrite + Unpin + ?Sized,
    R2: AsyncRead + Unpin + ?Sized,
    W2: AsyncWrite + Unpin + ?Sized,
{
    let a2b = copy_half(ar, bw);
    let b2a = copy_half(br, aw);
    tokio::pin!(a2b, b2a);
    tokio::select! {
        r = &mut a2b => if r.is_ok() { let _ = b2a.await; },
        r = &mut b2a => if r.is_ok() { let _ = a2b.await; },
    }
}

/// How long a connection closed for a migration reads (and drops) what
/// the client still sends, so that the close is a FIN, not a reset.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Ends a spliced connection that a migration's drain timeout closes: a
/// FIN to the client (a clean end of stream, not a reset), the gate's
/// guard released at once (the pause does not wait for the client), then
/// whatever the client still sends is read and dropped for at most
/// [`CLOSE_LINGER`] or until it closes its side: a socket closed with
/// unread data would answer with a reset.
pub(crate) async fn end_for_migration<R, W>(r: &mut R, w: &mut W, in_flight: InFlight)
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let _ = tokio::time::timeout(CLOSE_LINGER, w.shutdown()).await;
    drop(in_flight);
    let mut sink = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Ok(n) = r.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
