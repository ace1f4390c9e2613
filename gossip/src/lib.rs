//! The cluster mesh: one QUIC endpoint per node with mutual TLS, chitchat
//! gossip carried over it, and the typed cluster view built from gossip.
//!
//! This is the only crate that knows chitchat, quinn and rustls. It never
//! touches storage or serves HTTP.
