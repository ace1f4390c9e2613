//! The engine below every protocol: the node's [`Proxy`] (its bounds, the
//! routes, the tunnels, the backend pool, the per-site gates and the
//! connection limit), and the ways to a site's backend that every protocol
//! shares ([`Proxy::gate`], [`Proxy::connect_backend`],
//! [`Proxy::open_tunnel`], [`Proxy::tls_route`]). The listeners
//! (`server`), the protocols (`h1`, `passthrough`) and the byte pumps
//! (`splice`) sit on top of it; it depends on none of them.
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

use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};

use crate::http::Limits;
use crate::pool::{Pool, Upstream, UpstreamKey};
use crate::routes::{Routes, Target};
use crate::tunnel::{BoxRead, BoxWrite, TunnelHeader, Tunnels};

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
    pub(crate) connections: Arc<Semaphore>,
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
