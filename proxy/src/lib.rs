//! The per-node proxy: listeners, protocol sniffing (pure parsers over
//! bytes), routing by `Host` or SNI, tunnels to the master and per-site
//! gates.
//!
//! This crate never runs `zfs` and never speaks gossip.
//!
//! The protocol modules ([`http`], [`chunked`], [`tls`], [`route`]) are
//! sans-I/O: they take bytes (or names) and return values. A parser that
//! reads a prefix of a stream answers `Ok(Some(..))` when it has what it
//! needs, `Ok(None)` when it needs more bytes, and an error when the bytes
//! can never become valid input. None of them panics on any input, and each
//! bounds how much it will read before giving up, so a client cannot make the
//! proxy buffer without limit.

pub mod chunked;
pub mod host;
pub mod http;
pub mod route;
pub mod tls;
