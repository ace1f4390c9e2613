//! Moving bodies: request framing, relaying the response, and the
//! forwarding headers.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::debug;

use crate::chunked::ChunkedDecoder;
use crate::http::{Method, RequestBody, ResponseBody, parse_response};
use crate::pool::IO_BUF;

pub(super) enum Exchanged {
    Done {
        upstream_reusable: bool,
        client_may_continue: bool,
    },
    Upgraded,
}

pub(super) enum Failure {
    /// The upstream failed before sending a byte of a response.
    NothingReceived(io::Error),
    /// The response head was invalid; nothing was sent to the client.
    BadResponse(String),
    /// No response head in time; nothing was sent to the client.
    Timeout,
    /// Failed after the response started, or the client failed.
    Broken,
}

/// Where a message body stands.
#[derive(Debug)]
pub(super) enum BodyState {
    Done,
    Length(u64),
    Chunked(ChunkedDecoder),
}

impl BodyState {
    pub(super) fn for_request(b: RequestBody) -> Self {
        match b {
            RequestBody::None | RequestBody::ContentLength(0) => BodyState::Done,
            RequestBody::ContentLength(n) => BodyState::Length(n),
            RequestBody::Chunked => BodyState::Chunked(ChunkedDecoder::new()),
        }
    }

    pub(super) fn is_done(&self) -> bool {
        matches!(self, BodyState::Done)
    }

    /// How many bytes of `data` belong to the body; moves past them.
    pub(super) fn advance(&mut self, data: &[u8]) -> Result<usize, crate::chunked::ChunkedError> {
        match self {
            BodyState::Done => Ok(0),
            BodyState::Length(left) => {
                // min() keeps the result within data.len(), a usize.
                let n = (*left).min(data.len() as u64) as usize;
                *left -= n as u64;
                if *left == 0 {
                    *self = BodyState::Done;
                }
                Ok(n)
            }
            BodyState::Chunked(d) => {
                let p = d.feed(data)?;
                if p.done {
                    *self = BodyState::Done;
                }
                Ok(p.consumed)
            }
        }
    }

    /// The most bytes worth reading next: never past a known end, so that
    /// the next message's bytes stay in the socket when they can.
    fn want(&self) -> usize {
        match self {
            BodyState::Done => 0,
            // min() keeps the result within IO_BUF, a usize.
            BodyState::Length(left) => (*left).min(IO_BUF as u64) as usize,
            BodyState::Chunked(_) => IO_BUF,
        }
    }
}

/// Client → upstream: the rest of the request body.
pub(super) async fn send_body<R, W>(
    r: &mut R,
    buf: &mut Vec<u8>,
    w: &mut W,
    body: &mut BodyState,
    io_timeout: Duration,
) -> io::Result<()>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    if body.is_done() {
        return Ok(());
    }
    let mut scratch = vec![0u8; IO_BUF];
    loop {
        let want = body.want();
        let n = timeout(io_timeout, r.read(&mut scratch[..want]))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request body stalled"))??;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let used = body
            .advance(&scratch[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        w.write_all(&scratch[..used]).await?;
        if used < n {
            // A pipelined next request: it waits for its turn.
            buf.extend_from_slice(&scratch[used..n]);
        }
        if body.is_done() {
            return w.flush().await;
        }
    }
}

pub(super) async fn read_more<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(IO_BUF);
    }
    r.read_buf(buf).await
}

/// Upstream → client: interim responses, then the final response and its
/// body.
pub(super) async fn relay_response<R, W>(
    ur: &mut R,
    ubuf: &mut Vec<u8>,
    w: &mut W,
    method: Method,
    cfg: &crate::engine::ProxyConfig,
) -> Result<Exchanged, Failure>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut wrote = false;
    loop {
        let deadline = Instant::now() + cfg.response_timeout;
        let head = loop {
            if !ubuf.is_empty() {
                match parse_response(ubuf, method, &cfg.limits) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(e) if wrote => {
                        debug!(error = %e, "invalid response head after an interim one");
                        return Err(Failure::Broken);
                    }
                    Err(e) => return Err(Failure::BadResponse(e.to_string())),
                }
            }
            match timeout_at(deadline, read_more(ur, ubuf)).await {
                Err(_) if wrote => return Err(Failure::Broken),
                Err(_) => return Err(Failure::Timeout),
                Ok(Ok(n)) if n > 0 => {}
                Ok(res) => {
                    let e = res
                        .err()
                        .unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into());
                    return Err(if wrote {
                        Failure::Broken
                    } else if ubuf.is_empty() {
                        Failure::NothingReceived(e)
                    } else {
                        Failure::BadResponse("response head cut short".into())
                    });
                }
            }
        };
        let mut body = match head.body {
            ResponseBody::None | ResponseBody::Tunnel | ResponseBody::ContentLength(0) => {
                BodyState::Done
            }
            ResponseBody::ContentLength(n) => BodyState::Length(n),
            ResponseBody::Chunked => BodyState::Chunked(ChunkedDecoder::new()),
            // Counted as "everything": the end is the upstream's EOF.
            ResponseBody::UntilClose => BodyState::Length(u64::MAX),
        };
        let hl = head.head_len;
        let used = match body.advance(&ubuf[hl..]) {
            Ok(n) => n,
            Err(_) => return Err(Failure::BadResponse("malformed chunked body".into())),
        };
        // The head and the body bytes read with it leave in one write.
        if w.write_all(&ubuf[..hl + used]).await.is_err() {
            return Err(Failure::Broken);
        }
        wrote = true;
        ubuf.drain(..hl + used);
        if head.is_interim() {
            if w.flush().await.is_err() {
                return Err(Failure::Broken);
            }
            continue;
        }
        if head.body == ResponseBody::Tunnel {
            return Ok(Exchanged::Upgraded);
        }
        let until_close = head.body == ResponseBody::UntilClose;
        while !body.is_done() {
            let n = match timeout(cfg.io_timeout, read_more(ur, ubuf)).await {
                Ok(Ok(n)) => n,
                _ => return Err(Failure::Broken),
            };
            if n == 0 {
                if until_close {
                    break;
                }
                return Err(Failure::Broken);
            }
            let used = body.advance(ubuf).map_err(|_| Failure::Broken)?;
            if w.write_all(&ubuf[..used]).await.is_err() {
                return Err(Failure::Broken);
            }
            ubuf.drain(..used);
        }
        if w.flush().await.is_err() {
            return Err(Failure::Broken);
        }
        return Ok(Exchanged::Done {
            upstream_reusable: head.keep_alive && ubuf.is_empty(),
            client_may_continue: !until_close,
        });
    }
}

/// Appends `X-Forwarded-For` and `Forwarded` (RFC 7239) lines for `peer`.
pub(super) fn push_forwarded(out: &mut Vec<u8>, peer: SocketAddr, host: Option<&[u8]>) {
    let ip = peer.ip();
    let mut s = String::with_capacity(128);
    let _ = write!(s, "X-Forwarded-For: {ip}\r\nForwarded: for=");
    match ip {
        std::net::IpAddr::V4(a) => {
            let _ = write!(s, "{a}");
        }
        std::net::IpAddr::V6(a) => {
            let _ = write!(s, "\"[{a}]\"");
        }
    }
    s.push_str(";proto=http");
    if let Some(h) = host {
        // The Host value was checked by the parser (letters, digits, '.',
        // '-', '_', ':', '[', ']'): nothing to escape inside quotes.
        s.push_str(";host=\"");
        s.push_str(&String::from_utf8_lossy(h));
        s.push('"');
    }
    s.push_str("\r\n");
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}
