//! The values the parsers return: heads described by spans into the
//! buffer, their bodies' framing, the bounds, and the errors.

use super::bytes::list_elements;
use crate::host::InvalidHost;

/// Bounds on what a head may cost. Both are checked before anything is
/// allocated for the head's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest head, start line to the empty line inclusive, in bytes.
    pub max_head_len: usize,
    /// The most header fields a head may carry.
    pub max_headers: usize,
}

impl Default for Limits {
    /// 16 KiB and 100 fields, near nginx's and HAProxy's defaults.
    fn default() -> Self {
        Limits {
            max_head_len: 16 * 1024,
            max_headers: 100,
        }
    }
}

/// Why a head was refused. The bytes were only read; the connection should
/// be answered (for a request, with [`HttpError::status`]) and closed, since
/// where the next message starts is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("head longer than the limit of {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("more than the limit of {limit} header fields")]
    TooManyHeaders { limit: usize },
    #[error("malformed head at byte {at}: {reason}")]
    Malformed { at: usize, reason: &'static str },
    #[error("unsupported HTTP version '{0}'")]
    UnsupportedVersion(String),
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error(transparent)]
    InvalidHost(#[from] InvalidHost),
    #[error("invalid Content-Length '{0}'")]
    InvalidContentLength(String),
    #[error("conflicting Content-Length values {0} and {1}")]
    ConflictingContentLength(u64, u64),
    #[error("both Transfer-Encoding and Content-Length (possible request smuggling)")]
    TransferEncodingWithContentLength,
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    TransferEncodingInHttp10,
    #[error("invalid Transfer-Encoding '{0}': chunked must be the last coding, once")]
    InvalidTransferEncoding(String),
}

impl HttpError {
    /// The status a proxy answers a refused *request* with. (A refused
    /// response from a backend is a 502 whatever the reason.)
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => 431,
            HttpError::UnsupportedVersion(_) => 505,
            HttpError::InvalidTransferEncoding(_) => 501,
            _ => 400,
        }
    }
}

pub(super) fn malformed<T>(at: usize, reason: &'static str) -> Result<T, HttpError> {
    Err(HttpError::Malformed { at, reason })
}

/// A byte range of the parsed buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    /// The bytes of this span. `buf` must be the buffer that was parsed
    /// (or one that starts with the same head).
    ///
    /// # Panics
    /// If `buf` is shorter than the parsed head.
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// One header field: its name as sent (any case) and its value with
/// surrounding whitespace removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub name: Span,
    pub value: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    Http10,
    Http11,
}

/// The request method, as far as framing and routing care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    /// Any other token; the bytes are in [`RequestHead::method`].
    Other,
}

impl Method {
    pub(super) fn from_bytes(m: &[u8]) -> Method {
        // Methods are case-sensitive (RFC 9110 §9.1).
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"CONNECT" => Method::Connect,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// The shape of the request target (RFC 9112 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetForm {
    /// `/path?query`
    Origin,
    /// `http://host/path`: the host in the target is the routing host.
    Absolute,
    /// `host:port`, with `CONNECT` only.
    Authority,
    /// `*`, with `OPTIONS` only.
    Asterisk,
}

/// How the body of a request is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// No body: neither `Content-Length` nor `Transfer-Encoding`.
    None,
    /// Exactly this many bytes follow the head (possibly 0).
    ContentLength(u64),
    /// A chunked body follows; frame it with [`crate::chunked::ChunkedDecoder`].
    Chunked,
}

/// A parsed request head. Spans refer to the buffer given to
/// [`parse_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes from the start of the buffer to the end of the empty line that
    /// closes the head; the body (if any) starts here. Empty lines before the
    /// request line (RFC 9112 §2.2) are counted.
    pub head_len: usize,
    pub method: Span,
    pub method_kind: Method,
    pub target: Span,
    pub target_form: TargetForm,
    pub version: Version,
    pub headers: Vec<Header>,
    /// The routing host, normalised (see [`crate::host`]): from an
    /// absolute-form target if there is one, else from the `Host` header.
    /// `None` when there is no host to route on (an HTTP/1.0 request without
    /// `Host`, or an empty `Host` value).
    pub host: Option<String>,
    pub body: RequestBody,
    /// Whether the client may send another request on this connection
    /// after this one (HTTP/1.1 unless `Connection: close`; HTTP/1.0 only
    /// with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client may wait for a 100 before sending
    /// the body.
    pub expect_continue: bool,
    /// The `Upgrade` header's value, when the request asks for an upgrade
    /// (HTTP/1.1, `Connection: upgrade` and `Upgrade` both present).
    pub upgrade: Option<Span>,
}

impl RequestHead {
    /// Whether this is a WebSocket handshake (an upgrade to `websocket`).
    pub fn is_websocket(&self, buf: &[u8]) -> bool {
        self.upgrade.is_some_and(|u| {
            list_elements(u.of(buf)).any(|p| {
                let name = p.split(|&b| b == b'/').next().unwrap_or(p);
                name.eq_ignore_ascii_case(b"websocket")
            })
        })
    }

    /// The value of the first header named `name` (case-insensitive).
    pub fn header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        find_header(&self.headers, buf, name)
    }
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// No body: a response to HEAD, a 1xx (other than 101), 204 or 304.
    None,
    /// Exactly this many bytes follow the head (possibly 0).
    ContentLength(u64),
    /// A chunked body follows; frame it with [`crate::chunked::ChunkedDecoder`].
    Chunked,
    /// The body runs until the backend closes the connection.
    UntilClose,
    /// The connection stops being HTTP after the head: a 101 Switching
    /// Protocols, or a 2xx answer to CONNECT. Splice bytes both ways.
    Tunnel,
}

/// A parsed response head. Spans refer to the buffer given to
/// [`parse_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes from the start of the buffer to the end of the head.
    pub head_len: usize,
    pub version: Version,
    pub status: u16,
    pub reason: Span,
    pub headers: Vec<Header>,
    pub body: ResponseBody,
    /// Whether the backend connection can carry another request after this
    /// response's body: false for `Connection: close`, an HTTP/1.0 response
    /// without `keep-alive`, a body delimited by close, or a tunnel.
    pub keep_alive: bool,
}

impl ResponseHead {
    /// An interim response (100 Continue, 103 Early Hints, ...): forward it,
    /// then read the final response to the same request.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }

    /// The value of the first header named `name` (case-insensitive).
    pub fn header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        find_header(&self.headers, buf, name)
    }
}

pub(super) fn find_header<'a>(headers: &[Header], buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.of(buf).eq_ignore_ascii_case(name.as_bytes()))
        .map(|h| h.value.of(buf))
}
