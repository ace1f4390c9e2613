//! The TLS ClientHello (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2), read from the
//! first bytes of a connection to route it by SNI without terminating TLS.
//!
//! [`parse_client_hello`] reassembles the handshake message from as many
//! handshake records as it spans, then reads the `server_name` (RFC 6066
//! §3) and ALPN (RFC 7301) extensions. It only reads: the proxy replays the
//! same bytes to the backend. It answers `Ok(None)` until the whole hello
//! has arrived, refuses input that is not TLS at the first byte that shows
//! it, and never reads more than the `max_len` it is given.
//!
//! SSL 2.0-compatible hellos (high bit set in the first byte) are refused as
//! not TLS: no client in use sends them.

use std::borrow::Cow;

use crate::host::{InvalidHost, normalize_dns_name};

/// A sensible `max_len` for [`parse_client_hello`]: browsers' hellos,
/// post-quantum key shares included, are under 2 KiB; 16 KiB also leaves
/// room for large session tickets and encrypted hellos.
pub const DEFAULT_MAX_HELLO_LEN: usize = 16 * 1024;

const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const CONTENT_TYPE_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// RFC 8446 §5.1: a plaintext record's fragment is at most 2^14 bytes.
const MAX_FRAGMENT_LEN: usize = 1 << 14;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const SERVER_NAME_HOST: u8 = 0;

/// Why the first bytes were refused. Nothing was consumed; the connection
/// cannot be routed by SNI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// The bytes are not a TLS handshake record (another protocol).
    #[error("not a TLS handshake")]
    NotTls,
    /// A TLS handshake, but its first message is not a ClientHello.
    #[error("first handshake message is not a ClientHello")]
    NotClientHello,
    #[error("ClientHello longer than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    #[error("invalid server name: {0}")]
    InvalidServerName(InvalidHost),
}

/// What the proxy needs from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The SNI host name, normalised (lowercase, no trailing dot); `None`
    /// when the client sent none (e.g. connecting to an IP address).
    pub server_name: Option<String>,
    /// The ALPN protocol names offered, in the client's order (`h2`,
    /// `http/1.1`, ...); empty when the extension is absent.
    pub alpn: Vec<Vec<u8>>,
    /// The hello's `legacy_version` (0x0303 for TLS 1.2 and 1.3).
    pub legacy_version: u16,
    /// Bytes of the input, record headers included, that carried the hello.
    pub len: usize,
}

/// Reads a ClientHello from the front of `buf`, which holds the first bytes
/// the client sent. At most `max_len` bytes of records are read (see
/// [`DEFAULT_MAX_HELLO_LEN`]).
pub fn parse_client_hello(buf: &[u8], max_len: usize) -> Result<Option<ClientHello>, TlsError> {
    let Some((msg, len)) = reassemble(buf, max_len)? else {
        return Ok(None);
    };
    let mut hello = parse_hello_body(&msg[HANDSHAKE_HEADER_LEN..])?;
    hello.len = len;
    Ok(Some(hello))
}

/// Collects the ClientHello handshake message (header included) from the
/// records at the front of `buf`, and how many bytes those records take.
/// A reassembled handshake message and the record bytes it took.
type Reassembled<'a> = (Cow<'a, [u8]>, usize);

fn reassemble(buf: &[u8], max_len: usize) -> Result<Option<Reassembled<'_>>, TlsError> {
    let mut msg: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    let mut pos = 0;
    loop {
        let header = &buf[pos.min(buf.len())..buf.len().min(pos + RECORD_HEADER_LEN)];
        // Check each header byte as soon as it is there.
        if let Some(&content_type) = header.first()
            && content_type != CONTENT_TYPE_HANDSHAKE
        {
            return Err(if pos == 0 {
                TlsError::NotTls
            } else {
                TlsError::Malformed("non-handshake record before the ClientHello ended")
            });
        }
        if let Some(&major) = header.get(1)
            && major != 3
        {
            return Err(if pos == 0 {
                TlsError::NotTls
            } else {
                TlsError::Malformed("bad record version")
            });
        }
        if header.len() < RECORD_HEADER_LEN {
            return incomplete(pos + header.len(), max_len);
        }
        let fragment_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if fragment_len == 0 {
            return Err(TlsError::Malformed("empty handshake record"));
        }
        if fragment_len > MAX_FRAGMENT_LEN {
            return Err(TlsError::Malformed("record longer than 2^14 bytes"));
        }
        let start = pos + RECORD_HEADER_LEN;
        let end = start + fragment_len;
        if end > max_len {
            return Err(TlsError::TooLarge { limit: max_len });
        }
        let available = &buf[start..buf.len().min(end)];
        if pos == 0
            && let Some(&kind) = available.first()
            && kind != HANDSHAKE_CLIENT_HELLO
        {
            return Err(TlsError::NotClientHello);
        }
        if available.len() < fragment_len {
            return Ok(None);
        }
        // Borrow when the hello fits in the first record (the usual case).
        msg = match msg {
            Cow::Borrowed([]) => Cow::Borrowed(available),
            other => {
                let mut owned = other.into_owned();
                owned.extend_from_slice(available);
                Cow::Owned(owned)
            }
        };
        pos = end;
        if msg.len() >= HANDSHAKE_HEADER_LEN {
            let body_len =
                usize::from(msg[1]) << 16 | usize::from(msg[2]) << 8 | usize::from(msg[3]);
            let total = HANDSHAKE_HEADER_LEN + body_len;
            if total > max_len {
                return Err(TlsError::TooLarge { limit: max_len });
            }
            if msg.len() >= total {
                // Anything after the hello in its last record is left to the
                // TLS server to judge.
                let msg = match msg {
                    Cow::Borrowed(b) => Cow::Borrowed(&b[..total]),
                    Cow::Owned(mut v) => {
                        v.truncate(total);
                        Cow::Owned(v)
                    }
                };
                return Ok(Some((msg, pos)));
            }
        }
    }
}

fn incomplete<T>(have: usize, max_len: usize) -> Result<Option<T>, TlsError> {
    if have >= max_len {
        Err(TlsError::TooLarge { limit: max_len })
    } else {
        Ok(None)
    }
}

/// A cursor over a complete message; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TlsError> {
        if self.buf.len() < n {
            return Err(TlsError::Malformed(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, TlsError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, TlsError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a one-byte length prefix.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], TlsError> {
        let n = self.u8(what)?;
        self.take(usize::from(n), what)
    }

    /// A vector with a two-byte length prefix.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], TlsError> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

fn parse_hello_body(body: &[u8]) -> Result<ClientHello, TlsError> {
    let mut r = Reader { buf: body };
    let legacy_version = r.u16("truncated version")?;
    r.take(32, "truncated random")?;
    if r.vec8("truncated session id")?.len() > 32 {
        return Err(TlsError::Malformed("session id longer than 32 bytes"));
    }
    let suites = r.vec16("truncated cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(TlsError::Malformed("bad cipher suite list"));
    }
    if r.vec8("truncated compression methods")?.is_empty() {
        return Err(TlsError::Malformed("empty compression method list"));
    }
    let mut hello = ClientHello {
        server_name: None,
        alpn: Vec::new(),
        legacy_version,
        len: 0,
    };
    // A hello without extensions is valid (TLS 1.2 and older).
    if r.is_empty() {
        return Ok(hello);
    }
    let mut exts = Reader {
        buf: r.vec16("truncated extensions")?,
    };
    if !r.is_empty() {
        return Err(TlsError::Malformed("bytes after the extensions"));
    }
    let mut seen = Vec::new();
    while !exts.is_empty() {
        let kind = exts.u16("truncated extension")?;
        let data = exts.vec16("truncated extension")?;
        seen.push(kind);
        match kind {
            EXT_SERVER_NAME => hello.server_name = parse_server_name(data)?,
            EXT_ALPN => hello.alpn = parse_alpn(data)?,
            _ => {}
        }
    }
    // RFC 8446 §4.2: at most one extension of each type.
    seen.sort_unstable();
    if seen.windows(2).any(|w| w[0] == w[1]) {
        return Err(TlsError::Malformed("duplicate extension"));
    }
    Ok(hello)
}

fn parse_server_name(data: &[u8]) -> Result<Option<String>, TlsError> {
    let mut r = Reader { buf: data };
    let mut list = Reader {
        buf: r.vec16("truncated server name list")?,
    };
    if !r.is_empty() || list.is_empty() {
        return Err(TlsError::Malformed("bad server name list"));
    }
    let mut host = None;
    while !list.is_empty() {
        let kind = list.u8("truncated server name")?;
        let name = list.vec16("truncated server name")?;
        if kind != SERVER_NAME_HOST {
            continue;
        }
        if host.is_some() {
            return Err(TlsError::Malformed("more than one host name"));
        }
        host = Some(normalize_dns_name(name).map_err(TlsError::InvalidServerName)?);
    }
    Ok(host)
}

fn parse_alpn(data: &[u8]) -> Result<Vec<Vec<u8>>, TlsError> {
    let mut r = Reader { buf: data };
    let mut list = Reader {
        buf: r.vec16("truncated ALPN list")?,
    };
    if !r.is_empty() || list.is_empty() {
        return Err(TlsError::Malformed("bad ALPN list"));
    }
    let mut protocols = Vec::new();
    while !list.is_empty() {
        let name = list.vec8("truncated ALPN protocol")?;
        if name.is_empty() {
            return Err(TlsError::Malformed("empty ALPN protocol name"));
        }
        protocols.push(name.to_vec());
    }
    Ok(protocols)
}
