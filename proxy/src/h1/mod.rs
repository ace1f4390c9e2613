//! One HTTP/1.1 client connection: read a head, route it by its own Host,
//! forward it, relay the response, repeat.
//!
//! Heads are parsed in place ([`crate::http`]) and forwarded as read, plus
//! `X-Forwarded-For` and `Forwarded` lines when the request reaches the
//! site's backend on this node (the master adds them, once, for every
//! request: the ingress node passes the client's address in the tunnel
//! header instead). Bodies are framed, not decoded: `Content-Length` by
//! counting, chunked with [`ChunkedDecoder`], close-delimited responses
//! until EOF. Request and response bodies move at the same time, so a
//! backend may answer before the upload ends (the connection then closes).
//!
//! Files: `client.rs` (heads, routing, the proxy's own answers),
//! `forward.rs` (to the backend or a tunnel), `body.rs` (bodies, the
//! response relay, forwarding headers).

mod body;
mod client;
mod forward;

pub(crate) use client::serve_connection;
