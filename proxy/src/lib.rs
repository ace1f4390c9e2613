//! The per-node proxy: listeners, protocol sniffing (pure parsers over
//! bytes), routing by `Host` or SNI, tunnels to the master and per-site
//! gates.
//!
//! This crate never runs `zfs` and never speaks gossip.
