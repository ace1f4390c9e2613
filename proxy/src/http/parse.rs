//! The parsers: a request or response head from the front of a buffer.

use super::bytes::{is_field_byte, is_ows, is_tchar, list_elements, trim_ows};
use super::types::{
    Header, HttpError, Limits, Method, RequestBody, RequestHead, ResponseBody, ResponseHead, Span,
    TargetForm, Version, malformed,
};
use crate::host::parse_authority_host;

/// Parses a request head from the front of `buf`.
///
/// `Ok(None)`: the head is incomplete and may still fit the limits; call
/// again with more bytes (the same prefix, extended). Bytes after
/// [`RequestHead::head_len`] belong to the body or the next request.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HttpError> {
    let start = match skip_empty_lines(buf)? {
        Some(start) => start,
        None => return check_incomplete(buf, limits),
    };
    // Refuse what is not HTTP (a TLS hello, binary junk) at its first byte
    // rather than waiting for a head that never ends.
    let method_end = buf[start..]
        .iter()
        .position(|&b| !is_tchar(b))
        .map(|p| start + p);
    match method_end {
        Some(e) if e == start => return malformed(e, "request line must start with a method"),
        Some(e) if buf[e] != b' ' => return malformed(e, "invalid character in method"),
        _ => {}
    }
    let Some((head_len, lines)) = find_head(buf, start, limits)? else {
        return check_incomplete(buf, limits);
    };
    let mut lines = lines;
    let Some((first, _)) = lines.next_line(buf) else {
        return malformed(start, "empty start line");
    };
    let (method, target, version) = parse_request_line(buf, first)?;
    let headers = parse_headers(buf, lines, limits)?;
    let method_kind = Method::from_bytes(method.of(buf));
    let target_form = classify_target(buf, target, method_kind)?;
    let info = HeaderInfo::collect(buf, &headers)?;

    let host = match (target_form, info.host) {
        (_, HostHeader::Many) => return Err(HttpError::DuplicateHost),
        (TargetForm::Absolute, _) => Some(absolute_target_host(buf, target)?),
        (_, HostHeader::One(v)) if v.is_empty() => None,
        (_, HostHeader::One(v)) => Some(parse_authority_host(v.of(buf))?),
        (_, HostHeader::Missing) if version == Version::Http11 => {
            return Err(HttpError::MissingHost);
        }
        (_, HostHeader::Missing) => None,
    };
    // A Host header is checked even when an absolute-form target overrides
    // it, so that no invalid value reaches a backend.
    if let (TargetForm::Absolute, HostHeader::One(v)) = (target_form, info.host)
        && !v.is_empty()
    {
        parse_authority_host(v.of(buf))?;
    }

    let body = match info.framing(version)? {
        Framing::None => RequestBody::None,
        Framing::Length(n) => RequestBody::ContentLength(n),
        Framing::Chunked => RequestBody::Chunked,
        // RFC 9112 §6.3: a request whose final coding is not chunked has no
        // determinable length; the server must answer 400 (here: 501 for the
        // unknown coding) and close.
        Framing::OtherCoding(v) => return Err(HttpError::InvalidTransferEncoding(v)),
    };
    let keep_alive = info.keep_alive(version);
    // RFC 9110 §7.8: Upgrade in an HTTP/1.0 request is ignored.
    let upgrade = match (version, info.conn_upgrade, info.upgrade) {
        (Version::Http11, true, Some(u)) => Some(u),
        _ => None,
    };
    Ok(Some(RequestHead {
        head_len,
        method,
        method_kind,
        target,
        target_form,
        version,
        headers,
        host,
        body,
        keep_alive,
        expect_continue: info.expect_continue,
        upgrade,
    }))
}

/// Parses a response head from the front of `buf`. `request_method` is the
/// method of the request this answers, which decides whether a body follows
/// (RFC 9112 §6.3).
///
/// `Ok(None)`: the head is incomplete; call again with more bytes.
pub fn parse_response(
    buf: &[u8],
    request_method: Method,
    limits: &Limits,
) -> Result<Option<ResponseHead>, HttpError> {
    const PREFIX: &[u8] = b"HTTP/";
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return malformed(0, "status line must start with 'HTTP/'");
    }
    let Some((head_len, mut lines)) = find_head(buf, 0, limits)? else {
        return check_incomplete(buf, limits);
    };
    let Some((first, _)) = lines.next_line(buf) else {
        return malformed(0, "empty status line");
    };
    let (version, status, reason) = parse_status_line(buf, first)?;
    let headers = parse_headers(buf, lines, limits)?;
    let info = HeaderInfo::collect(buf, &headers)?;

    let no_body = request_method == Method::Head
        || (100..200).contains(&status)
        || status == 204
        || status == 304;
    let body =
        if status == 101 || (request_method == Method::Connect && (200..300).contains(&status)) {
            ResponseBody::Tunnel
        } else if no_body {
            // Whatever Content-Length says here describes a body that is not
            // sent (HEAD) or must not be (1xx, 204, 304), so it is not checked.
            ResponseBody::None
        } else {
            match info.framing(version)? {
                Framing::None => ResponseBody::UntilClose,
                Framing::Length(n) => ResponseBody::ContentLength(n),
                Framing::Chunked => ResponseBody::Chunked,
                Framing::OtherCoding(_) => ResponseBody::UntilClose,
            }
        };
    let keep_alive = info.keep_alive(version)
        && !matches!(body, ResponseBody::UntilClose | ResponseBody::Tunnel);
    Ok(Some(ResponseHead {
        head_len,
        version,
        status,
        reason,
        headers,
        body,
        keep_alive,
    }))
}

/// The answer for a buffer that holds no complete head yet.
pub(super) fn check_incomplete<T>(buf: &[u8], limits: &Limits) -> Result<Option<T>, HttpError> {
    if buf.len() >= limits.max_head_len {
        Err(HttpError::HeadTooLarge {
            limit: limits.max_head_len,
        })
    } else {
        Ok(None)
    }
}

/// Skips the empty lines a server should ignore before a request line
/// (RFC 9112 §2.2). `None` if the buffer ends inside them.
pub(super) fn skip_empty_lines(buf: &[u8]) -> Result<Option<usize>, HttpError> {
    let mut i = 0;
    loop {
        match buf.get(i..) {
            Some([b'\r', b'\n', ..]) => i += 2,
            Some([b'\r']) | Some([]) | None => return Ok(None),
            Some([b'\r', _, ..]) | Some([b'\n', ..]) => {
                return malformed(i, "line not ended by CRLF");
            }
            Some(_) => return Ok(Some(i)),
        }
    }
}

/// The lines of a complete head, each without its CRLF.
pub(super) struct Lines {
    pos: usize,
    /// Where the closing empty line starts.
    end: usize,
}

impl Lines {
    fn next_line(&mut self, buf: &[u8]) -> Option<(Span, usize)> {
        if self.pos >= self.end {
            return None;
        }
        // Every LF in the head was checked to follow a CR by find_head.
        let lf = buf[self.pos..self.end + 2]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.end + 1, |p| self.pos + p);
        let line = Span {
            start: self.pos,
            end: lf - 1,
        };
        let at = self.pos;
        self.pos = lf + 1;
        Some((line, at))
    }
}

/// Finds the empty line that ends the head starting at `start`, checking
/// on the way that every LF follows a CR. Returns the head length and the
/// head's lines, or `None` if the end is not in `buf` yet.
pub(super) fn find_head(
    buf: &[u8],
    start: usize,
    limits: &Limits,
) -> Result<Option<(usize, Lines)>, HttpError> {
    let scan_end = buf.len().min(limits.max_head_len);
    let mut i = start;
    while let Some(off) = buf[i..scan_end].iter().position(|&b| b == b'\n') {
        let lf = i + off;
        if lf == 0 || buf[lf - 1] != b'\r' {
            return malformed(lf, "line not ended by CRLF");
        }
        if lf >= start + 3 && buf[lf - 3..=lf] == *b"\r\n\r\n" {
            return Ok(Some((
                lf + 1,
                Lines {
                    pos: start,
                    end: lf - 1,
                },
            )));
        }
        if lf == start + 1 {
            // Cannot happen after skip_empty_lines for requests, and a
            // response must start with its status line.
            return malformed(start, "empty start line");
        }
        i = lf + 1;
    }
    Ok(None)
}

pub(super) fn parse_request_line(
    buf: &[u8],
    line: Span,
) -> Result<(Span, Span, Version), HttpError> {
    let bytes = line.of(buf);
    let mut parts = bytes.splitn(3, |&b| b == b' ');
    let (Some(m), Some(t), Some(v)) = (parts.next(), parts.next(), parts.next()) else {
        return malformed(line.start, "request line must be 'method target version'");
    };
    let method = Span {
        start: line.start,
        end: line.start + m.len(),
    };
    let target = Span {
        start: method.end + 1,
        end: method.end + 1 + t.len(),
    };
    if m.is_empty() || !m.iter().copied().all(is_tchar) {
        return malformed(method.start, "invalid method");
    }
    if t.is_empty() || !t.iter().all(|&b| b > b' ' && b != 0x7f) {
        return malformed(target.start, "invalid request target");
    }
    let version = parse_version(v).map_err(|e| match e {
        Some(e) => e,
        None => HttpError::Malformed {
            at: target.end + 1,
            reason: "invalid HTTP version",
        },
    })?;
    Ok((method, target, version))
}

/// `Err(None)` for what is not an HTTP version at all.
pub(super) fn parse_version(v: &[u8]) -> Result<Version, Option<HttpError>> {
    match v {
        b"HTTP/1.1" => Ok(Version::Http11),
        b"HTTP/1.0" => Ok(Version::Http10),
        [b'H', b'T', b'T', b'P', b'/', a, b'.', b] if a.is_ascii_digit() && b.is_ascii_digit() => {
            Err(Some(HttpError::UnsupportedVersion(
                String::from_utf8_lossy(v).into_owned(),
            )))
        }
        _ => Err(None),
    }
}

pub(super) fn parse_status_line(buf: &[u8], line: Span) -> Result<(Version, u16, Span), HttpError> {
    let bytes = line.of(buf);
    // "HTTP/1.1 200 " at least; the reason may be empty.
    let (v, rest) = bytes.split_at(bytes.len().min(8));
    let version = parse_version(v).map_err(|e| {
        e.unwrap_or(HttpError::Malformed {
            at: line.start,
            reason: "invalid HTTP version",
        })
    })?;
    let status = match rest {
        [b' ', a, b, c, ..] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return malformed(line.start + 8, "invalid status code"),
    };
    if status < 100 {
        return malformed(line.start + 9, "status code below 100");
    }
    let reason = match &rest[4..] {
        [] => Span {
            start: line.end,
            end: line.end,
        },
        [b' ', r @ ..] => {
            if !r.iter().copied().all(is_field_byte) {
                return malformed(line.start + 13, "invalid character in reason phrase");
            }
            Span {
                start: line.start + 13,
                end: line.end,
            }
        }
        _ => return malformed(line.start + 12, "status code must be 3 digits"),
    };
    Ok((version, status, reason))
}

pub(super) fn parse_headers(
    buf: &[u8],
    mut lines: Lines,
    limits: &Limits,
) -> Result<Vec<Header>, HttpError> {
    let mut headers = Vec::new();
    while let Some((line, at)) = lines.next_line(buf) {
        if headers.len() >= limits.max_headers {
            return Err(HttpError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        let bytes = line.of(buf);
        let Some(colon) = bytes.iter().position(|&b| !is_tchar(b)) else {
            return malformed(at, "header field without ':'");
        };
        if bytes[colon] != b':' {
            return malformed(
                at + colon,
                if colon == 0 && matches!(bytes[0], b' ' | b'\t') {
                    "obsolete line folding"
                } else {
                    "invalid character in header name"
                },
            );
        }
        if colon == 0 {
            return malformed(at, "empty header name");
        }
        let value = &bytes[colon + 1..];
        if let Some(bad) = value.iter().position(|&b| !is_field_byte(b)) {
            return malformed(at + colon + 1 + bad, "invalid character in header value");
        }
        let lead = value.iter().take_while(|&&b| is_ows(b)).count();
        let trail = value[lead..]
            .iter()
            .rev()
            .take_while(|&&b| is_ows(b))
            .count();
        headers.push(Header {
            name: Span {
                start: line.start,
                end: line.start + colon,
            },
            value: Span {
                start: line.start + colon + 1 + lead,
                end: line.end - trail,
            },
        });
    }
    Ok(headers)
}

pub(super) fn classify_target(
    buf: &[u8],
    target: Span,
    method: Method,
) -> Result<TargetForm, HttpError> {
    let t = target.of(buf);
    let form = if method == Method::Connect {
        // The tunnel's destination; routing still uses the Host header.
        parse_authority_host(t)?;
        TargetForm::Authority
    } else if t == b"*" {
        if method != Method::Options {
            return malformed(target.start, "'*' target is for OPTIONS only");
        }
        TargetForm::Asterisk
    } else if t.starts_with(b"/") {
        TargetForm::Origin
    } else if scheme_len(t).is_some() {
        TargetForm::Absolute
    } else {
        return malformed(
            target.start,
            "request target is not in origin or absolute form",
        );
    };
    Ok(form)
}

/// The length of `http://` or `https://` (any case) at the start of `t`.
pub(super) fn scheme_len(t: &[u8]) -> Option<usize> {
    [&b"http://"[..], &b"https://"[..]]
        .into_iter()
        .find(|s| t.len() >= s.len() && t[..s.len()].eq_ignore_ascii_case(s))
        .map(<[u8]>::len)
}

pub(super) fn absolute_target_host(buf: &[u8], target: Span) -> Result<String, HttpError> {
    let t = target.of(buf);
    let rest = &t[scheme_len(t).unwrap_or(0)..];
    let authority_len = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    if authority.contains(&b'@') {
        return malformed(target.start, "user information in request target");
    }
    Ok(parse_authority_host(authority)?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HostHeader {
    Missing,
    One(Span),
    Many,
}

pub(super) enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Transfer-Encoding whose final coding is not chunked (the value).
    OtherCoding(String),
}

/// What the framing, routing and connection headers say, gathered in one
/// pass.
pub(super) struct HeaderInfo {
    host: HostHeader,
    content_length: Option<u64>,
    /// Set when any Transfer-Encoding header is present.
    transfer_encoding: Option<TeState>,
    conn_close: bool,
    conn_keep_alive: bool,
    conn_upgrade: bool,
    expect_continue: bool,
    upgrade: Option<Span>,
}

#[derive(Default)]
pub(super) struct TeState {
    /// `chunked` was the last coding seen so far.
    chunked_last: bool,
    /// Codings seen, and how many of them were `chunked`.
    codings: usize,
    chunked: usize,
    /// The raw values, for the error message.
    raw: Vec<u8>,
}

impl HeaderInfo {
    fn collect(buf: &[u8], headers: &[Header]) -> Result<HeaderInfo, HttpError> {
        let mut info = HeaderInfo {
            host: HostHeader::Missing,
            content_length: None,
            transfer_encoding: None,
            conn_close: false,
            conn_keep_alive: false,
            conn_upgrade: false,
            expect_continue: false,
            upgrade: None,
        };
        for h in headers {
            let name = h.name.of(buf);
            let value = h.value.of(buf);
            if name.eq_ignore_ascii_case(b"host") {
                info.host = match info.host {
                    HostHeader::Missing => HostHeader::One(h.value),
                    _ => HostHeader::Many,
                };
            } else if name.eq_ignore_ascii_case(b"content-length") {
                // RFC 9110 §8.6: a list of identical values may be taken as
                // that one value; anything else is an error.
                for v in value.split(|&b| b == b',') {
                    let n = parse_content_length(trim_ows(v))
                        .ok_or_else(|| HttpError::InvalidContentLength(lossy(value)))?;
                    match info.content_length {
                        Some(prev) if prev != n => {
                            return Err(HttpError::ConflictingContentLength(prev, n));
                        }
                        _ => info.content_length = Some(n),
                    }
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                let te = info.transfer_encoding.get_or_insert_with(TeState::default);
                if !te.raw.is_empty() {
                    te.raw.extend_from_slice(b", ");
                }
                te.raw.extend_from_slice(value);
                for coding in list_elements(value) {
                    te.codings += 1;
                    te.chunked_last = coding.eq_ignore_ascii_case(b"chunked");
                    te.chunked += usize::from(te.chunked_last);
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                for opt in list_elements(value) {
                    if opt.eq_ignore_ascii_case(b"close") {
                        info.conn_close = true;
                    } else if opt.eq_ignore_ascii_case(b"keep-alive") {
                        info.conn_keep_alive = true;
                    } else if opt.eq_ignore_ascii_case(b"upgrade") {
                        info.conn_upgrade = true;
                    }
                }
            } else if name.eq_ignore_ascii_case(b"expect") {
                info.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
            } else if name.eq_ignore_ascii_case(b"upgrade") && info.upgrade.is_none() {
                info.upgrade = Some(h.value);
            }
        }
        Ok(info)
    }

    /// RFC 9112 §6.1 and §6.3, for both directions.
    fn framing(&self, version: Version) -> Result<Framing, HttpError> {
        let Some(te) = &self.transfer_encoding else {
            return Ok(match self.content_length {
                Some(n) => Framing::Length(n),
                None => Framing::None,
            });
        };
        if version == Version::Http10 {
            return Err(HttpError::TransferEncodingInHttp10);
        }
        if self.content_length.is_some() {
            return Err(HttpError::TransferEncodingWithContentLength);
        }
        if te.chunked > 1 || (te.chunked == 1 && !te.chunked_last) || te.codings == 0 {
            return Err(HttpError::InvalidTransferEncoding(lossy(&te.raw)));
        }
        Ok(if te.chunked_last {
            Framing::Chunked
        } else {
            Framing::OtherCoding(lossy(&te.raw))
        })
    }

    fn keep_alive(&self, version: Version) -> bool {
        match version {
            Version::Http11 => !self.conn_close,
            Version::Http10 => self.conn_keep_alive && !self.conn_close,
        }
    }
}

/// `1*DIGIT`, no sign, no whitespace, fitting in a `u64`.
pub(super) fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

pub(super) fn lossy(v: &[u8]) -> String {
    const SHOWN: usize = 64;
    let mut s = String::from_utf8_lossy(&v[..v.len().min(SHOWN)]).into_owned();
    if v.len() > SHOWN {
        s.push_str("...");
    }
    s
}
