//! The per-node proxy: listeners, protocol sniffing (pure parsers over
//! bytes), routing by `Host` or SNI, tunnels to the master, per-site gates
//! and the site runtimes (static files, supervised commands).
//!
//! This crate never runs `zfs` and never speaks gossip: the daemon gives it
//! a `watch` of [`Routes`] and an implementation of [`Tunnels`], and hands
//! it the streams other nodes open ([`Proxy::serve_tunnel`]).
//!
//! The protocol modules ([`http`], [`chunked`], [`tls`], [`route`],
//! [`tunnel`]'s header codec) are sans-I/O: they take bytes (or names) and
//! return values. A parser that reads a prefix of a stream answers
//! `Ok(Some(..))` when it has what it needs, `Ok(None)` when it needs more
//! bytes, and an error when the bytes can never become valid input. None of
//! them panics on any input, and each bounds how much it will read before
//! giving up, so a client cannot make the proxy buffer without limit.

pub mod chunked;
mod engine;
pub mod gate;
mod h1;
pub mod host;
pub mod http;
mod passthrough;
mod pool;
pub mod route;
pub mod routes;
pub mod runtime;
mod server;
mod splice;
pub mod static_files;
pub mod testing;
pub mod tls;
pub mod tunnel;

pub use engine::{DEFAULT_MAX_CONNECTIONS, Proxy, ProxyConfig, fit_to_fd_limit, raise_fd_limit};
pub use gate::{GateLimits, Gates, InFlight, Pass, Redirect};
pub use routes::{Backend, Resolved, Routes, Target};
pub use tunnel::{BoxFuture, BoxRead, BoxWrite, Protocol, TunnelHeader, Tunnels};
