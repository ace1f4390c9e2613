//! Kept-alive upstream connections: to local backends and, on an ingress
//! node, tunnels to a site's master.
//!
//! An upstream connection goes back to the pool only between messages
//! (nothing buffered, the response's body fully read), so a connection
//! taken from the pool is always at a message boundary. Idle connections
//! are bounded per key and expire; a connection the peer closed while idle
//! is noticed at take time and dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

use crate::tunnel::{BoxRead, BoxWrite};

/// The size of upstream read buffers and body copy buffers: large buffers
/// matter for large bodies (see the proxy baseline notes).
pub(crate) const IO_BUF: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum UpstreamKey {
    Tcp(SocketAddr),
    Tunnel { node: String, site: String },
}

/// One HTTP/1.1 connection to a backend or a master.
pub(crate) struct Upstream {
    pub r: BoxRead,
    pub w: BoxWrite,
    /// Bytes read from `r` and not yet forwarded.
    pub buf: Vec<u8>,
    /// Taken from the pool (the peer may have closed it meanwhile).
    pub reused: bool,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("buffered", &self.buf.len())
            .field("reused", &self.reused)
            .finish()
    }
}

impl Upstream {
    pub fn new(r: BoxRead, w: BoxWrite) -> Self {
        Upstream {
            r,
            w,
            buf: Vec::with_capacity(IO_BUF),
            reused: false,
        }
    }

    /// Whether the peer closed the connection or sent something unasked
    /// while it was idle. Polls once without waiting.
    fn looks_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        let mut rb = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        // Pending: idle and open. Ready: EOF, an error, or unsolicited
        // bytes; none of them is a usable idle connection.
        Pin::new(&mut self.r).poll_read(&mut cx, &mut rb).is_ready()
    }
}

#[derive(Debug)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<UpstreamKey, Vec<(Upstream, Instant)>>>,
    max_idle_per_key: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(max_idle_per_key: usize, idle_timeout: Duration) -> Self {
        Pool {
            idle: Mutex::new(HashMap::new()),
            max_idle_per_key,
            idle_timeout,
        }
    }

    pub fn take(&self, key: &UpstreamKey) -> Option<Upstream> {
        let now = Instant::now();
        // A poisoned lock means a panic elsewhere while holding it; the map
        // itself is still consistent (every operation is a push or a pop).
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        while let Some((mut up, since)) = list.pop() {
            if now.duration_since(since) < self.idle_timeout && !up.looks_closed() {
                up.reused = true;
                return Some(up);
            }
        }
        None
    }

    pub fn put(&self, key: UpstreamKey, up: Upstream) {
        if !up.buf.is_empty() || self.max_idle_per_key == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(key).or_default();
        if list.len() >= self.max_idle_per_key {
            // Drop the oldest: the newest is the least likely to have been
            // closed by the peer.
            list.remove(0);
        }
        list.push((up, Instant::now()));
    }

    /// Idle connections held, over all keys.
    pub fn idle_len(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.values().map(Vec::len).sum()
    }
}
