//! HTTP/1.x message heads (RFC 9112), parsed in place.
//!
//! [`parse_request`] and [`parse_response`] read a head from the front of a
//! buffer and describe it with [`Span`]s into that buffer, so the proxy can
//! route on the request and forward the bytes unchanged, without copying.
//! Each answers `Ok(None)` while the head is incomplete and never reads past
//! [`Limits::max_head_len`].
//!
//! The parsers are strict where leniency lets two parties disagree on where
//! a message ends (request smuggling, RFC 9112 §11.2): lines end in CRLF
//! only, obsolete line folding and whitespace before a header's colon are
//! refused, `Content-Length` values must agree, and `Transfer-Encoding`
//! with `Content-Length`, or in an HTTP/1.0 message, is refused.
//!
//! [`HttpError::status`] gives the status the proxy answers a refused
//! request with: 431 for heads over the limits, 505 for other versions,
//! 501 for unknown transfer codings and 400 for the rest.
//!
//! Files: `types.rs` (what the parsers return), `parse.rs` (the parsers),
//! `bytes.rs` (byte classes, reason phrases).

mod bytes;
mod parse;
mod types;

pub(crate) use bytes::{is_field_byte, is_tchar, reason};
pub use parse::{parse_request, parse_response};
pub use types::{
    Header, HttpError, Limits, Method, RequestBody, RequestHead, ResponseBody, ResponseHead, Span,
    TargetForm, Version,
};
