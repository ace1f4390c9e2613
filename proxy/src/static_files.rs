//! The `static` runtime: a small HTTP responder over a site's directory.
//!
//! Invariants: a response only ever carries a regular file whose
//! canonical path lies under the site's canonical root (symlinks are
//! followed, then checked), and never one under the site's `.ringhost/`
//! directory (ringhost's own). The request path is percent-decoded once,
//! as bytes; `..` segments, NUL and backslashes are refused before any
//! file system access.
//!
//! Supported: `GET`/`HEAD`, `index.html` for directories, content types by
//! extension, a single byte `Range` (206/416, honouring `If-Range`),
//! `ETag` with `If-None-Match` and `Last-Modified` with
//! `If-Modified-Since` (304).

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use crate::http::{Method, RequestHead};
use crate::pool::IO_BUF;

/// ringhost's own directory inside a site: never served.
pub const PRIVATE_DIR: &str = ".ringhost";

/// Why a request path was refused before touching the file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("bad percent-encoding")]
    BadEscape,
    #[error("'..' segment")]
    DotDot,
    #[error("forbidden byte")]
    ForbiddenByte,
    #[error("private directory")]
    Private,
    #[error("not an origin-form path")]
    NotAPath,
}

/// The decoded path segments of a request target's path (query and
/// fragment dropped), with `.` and empty segments removed. `trailing_slash`
/// tells whether the path ended in `/`.
pub fn decode_path(target: &[u8]) -> Result<(Vec<String>, bool), PathError> {
    let end = target
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let path = &target[..end];
    if path.first() != Some(&b'/') {
        return Err(PathError::NotAPath);
    }
    let mut segments = Vec::new();
    for raw in path[1..].split(|&b| b == b'/') {
        let seg = percent_decode(raw)?;
        if seg.contains(&0) || seg.contains(&b'\\') || seg.contains(&b'/') {
            // An encoded '/' would smuggle a separator past the segment check.
            return Err(PathError::ForbiddenByte);
        }
        match &seg[..] {
            b"" | b"." => continue,
            b".." => return Err(PathError::DotDot),
            _ => {}
        }
        let seg = String::from_utf8(seg).map_err(|_| PathError::ForbiddenByte)?;
        if segments.is_empty() && seg.eq_ignore_ascii_case(PRIVATE_DIR) {
            return Err(PathError::Private);
        }
        segments.push(seg);
    }
    Ok((segments, path.ends_with(b"/")))
}

fn percent_decode(raw: &[u8]) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            let (Some(h), Some(l)) = (
                raw.get(i + 1).and_then(|&b| hex(b)),
                raw.get(i + 2).and_then(|&b| hex(b)),
            ) else {
                return Err(PathError::BadEscape);
            };
            // Two hex digits make at most 255.
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The content type for a file name, by extension.
pub fn content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        _ => "application/octet-stream",
    }
}

/// A byte range request, parsed against a file length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReq {
    /// No usable Range: serve the whole file.
    Full,
    /// Serve bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

/// Parses a `Range` value (RFC 9110 §14.2) for a single byte range. A
/// syntactically invalid value or several ranges are ignored (the whole
/// file is served), which the RFC allows.
pub fn parse_range(value: &[u8], len: u64) -> RangeReq {
    let Ok(v) = std::str::from_utf8(value) else {
        return RangeReq::Full;
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.trim(), b.trim()) {
        ("", suffix) => match num(suffix) {
            Some(0) => RangeReq::Unsatisfiable,
            Some(n) if len == 0 => {
                let _ = n;
                RangeReq::Unsatisfiable
            }
            Some(n) => RangeReq::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            None => RangeReq::Full,
        },
        (start, "") => match num(start) {
            Some(s) if s < len => RangeReq::Part {
                start: s,
                end: len - 1,
            },
            Some(_) => RangeReq::Unsatisfiable,
            None => RangeReq::Full,
        },
        (start, end) => match (num(start), num(end)) {
            (Some(s), Some(e)) if s <= e => {
                if s >= len {
                    RangeReq::Unsatisfiable
                } else {
                    RangeReq::Part {
                        start: s,
                        end: e.min(len - 1),
                    }
                }
            }
            _ => RangeReq::Full,
        },
    }
}

fn etag_for(len: u64, mtime: SystemTime) -> String {
    let d = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("\"{len:x}-{:x}-{:x}\"", d.as_secs(), d.subsec_nanos())
}

/// Whether an `If-None-Match` list matches `etag` (weak comparison).
fn none_match(value: &[u8], etag: &str) -> bool {
    let Ok(v) = std::str::from_utf8(value) else {
        return false;
    };
    v.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// Resolves the request path to a file inside `root`, or the status to
/// answer.
async fn resolve(root: &Path, target: &[u8]) -> Result<Resolved, u16> {
    let (segments, trailing) = decode_path(target).map_err(|e| -> u16 {
        match e {
            PathError::Private => 404,
            _ => 400,
        }
    })?;
    let root = tokio::fs::canonicalize(root).await.map_err(|_| 404u16)?;
    let mut path = root.clone();
    path.extend(&segments);
    let checked = |p: PathBuf| -> Result<PathBuf, u16> {
        // Symlinks were followed by canonicalize: check where they led.
        let rel = p.strip_prefix(&root).map_err(|_| 404u16)?;
        if rel
            .components()
            .next()
            .is_some_and(|c| c.as_os_str().eq_ignore_ascii_case(PRIVATE_DIR))
        {
            return Err(404);
        }
        Ok(p)
    };
    let real = checked(tokio::fs::canonicalize(&path).await.map_err(io_status)?)?;
    let meta = tokio::fs::metadata(&real).await.map_err(io_status)?;
    if meta.is_dir() {
        if !trailing && !segments.is_empty() {
            let mut loc = String::from("/");
            for s in &segments {
                for b in s.bytes() {
                    if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
                        loc.push(char::from(b));
                    } else {
                        let _ = write!(loc, "%{b:02X}");
                    }
                }
                loc.push('/');
            }
            return Ok(Resolved::Redirect(loc));
        }
        let index = checked(
            tokio::fs::canonicalize(real.join("index.html"))
                .await
                .map_err(io_status)?,
        )?;
        let meta = tokio::fs::metadata(&index).await.map_err(io_status)?;
        if !meta.is_file() {
            return Err(404);
        }
        return Ok(Resolved::File(index, meta));
    }
    if !meta.is_file() {
        return Err(404);
    }
    Ok(Resolved::File(real, meta))
}

enum Resolved {
    File(PathBuf, std::fs::Metadata),
    Redirect(String),
}

fn io_status(e: io::Error) -> u16 {
    match e.kind() {
        io::ErrorKind::PermissionDenied => 403,
        _ => 404,
    }
}

/// Answers one request from the files under `root`. `head_bytes` is the
/// buffer the head was parsed from. Writes the whole response; the caller
/// decides about the connection (`keep_alive` only shapes the
/// `Connection` header).
pub(crate) async fn respond<W: AsyncWrite + Unpin + ?Sized>(
    root: &Path,
    head: &RequestHead,
    head_bytes: &[u8],
    keep_alive: bool,
    w: &mut W,
) -> io::Result<()> {
    let is_head = head.method_kind == Method::Head;
    if !matches!(head.method_kind, Method::Get | Method::Head) {
        return simple(w, 405, &[("Allow", "GET, HEAD")], is_head, keep_alive).await;
    }
    let (path, meta) = match resolve(root, head.target.of(head_bytes)).await {
        Ok(Resolved::File(p, m)) => (p, m),
        Ok(Resolved::Redirect(loc)) => {
            return simple(w, 301, &[("Location", &loc)], is_head, keep_alive).await;
        }
        Err(status) => return simple(w, status, &[], is_head, keep_alive).await,
    };
    let len = meta.len();
    let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
    let etag = etag_for(len, mtime);
    let last_modified = httpdate::fmt_http_date(mtime);
    let validators = [
        ("ETag", etag.as_str()),
        ("Last-Modified", last_modified.as_str()),
    ];

    let not_modified = if let Some(inm) = head.header(head_bytes, "if-none-match") {
        none_match(inm, &etag)
    } else if let Some(ims) = head.header(head_bytes, "if-modified-since") {
        let since = std::str::from_utf8(ims)
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok());
        // HTTP dates have whole seconds: compare at that precision.
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        since.is_some_and(|s| secs(mtime) <= secs(s))
    } else {
        false
    };
    if not_modified {
        return write_head(w, 304, None, &validators, None, keep_alive).await;
    }

    let mut range = match head.header(head_bytes, "range") {
        Some(r) => parse_range(r, len),
        None => RangeReq::Full,
    };
    if let Some(ir) = head.header(head_bytes, "if-range") {
        // A range of a changed file would splice two versions: serve whole.
        let same = ir == etag.as_bytes() || ir == last_modified.as_bytes();
        if !same {
            range = RangeReq::Full;
        }
    }
    let ctype = content_type(&path);
    let (status, start, count, content_range) = match range {
        RangeReq::Full => (200, 0, len, None),
        RangeReq::Part { start, end } => (
            206,
            start,
            end - start + 1,
            Some(format!("bytes {start}-{end}/{len}")),
        ),
        RangeReq::Unsatisfiable => {
            let cr = format!("bytes */{len}");
            return simple(w, 416, &[("Content-Range", &cr)], is_head, keep_alive).await;
        }
    };
    let mut extra: Vec<(&str, &str)> = vec![("Content-Type", ctype), ("Accept-Ranges", "bytes")];
    extra.extend_from_slice(&validators);
    if let Some(cr) = &content_range {
        extra.push(("Content-Range", cr));
    }
    // Open before the head goes out, so that a vanished file is a 404.
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return simple(w, io_status(e), &[], is_head, keep_alive).await,
    };
    write_head(w, status, Some(count), &extra, None, keep_alive).await?;
    if is_head {
        return w.flush().await;
    }
    if start > 0 {
        file.seek(io::SeekFrom::Start(start)).await?;
    }
    let mut buf = vec![0u8; IO_BUF.min(usize::try_from(count).unwrap_or(IO_BUF).max(1))];
    let mut left = count;
    while left > 0 {
        // min() keeps the result within buf.len(), a usize.
        let want = (buf.len() as u64).min(left) as usize;
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            // The file shrank while being sent: the length promised cannot
            // be kept, so the connection must end.
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        w.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    w.flush().await
}

async fn simple<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    status: u16,
    extra: &[(&str, &str)],
    is_head: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let body = format!("{status} {}\n", crate::http::reason(status));
    let mut all: Vec<(&str, &str)> = vec![("Content-Type", "text/plain; charset=utf-8")];
    all.extend_from_slice(extra);
    let body = if is_head { None } else { Some(body.as_bytes()) };
    write_head(
        w,
        status,
        Some(body.map_or(0, <[u8]>::len) as u64),
        &all,
        body,
        keep_alive,
    )
    .await?;
    w.flush().await
}

async fn write_head<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    status: u16,
    content_length: Option<u64>,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
    keep_alive: bool,
) -> io::Result<()> {
    let mut out = String::with_capacity(256);
    let _ = write!(out, "HTTP/1.1 {status} {}\r\n", crate::http::reason(status));
    // HTTP requires a Date on responses from a server with a clock; this is
    // the one place the proxy reads the wall clock.
    #[allow(clippy::disallowed_methods)]
    let now = SystemTime::now();
    let _ = write!(out, "Date: {}\r\n", httpdate::fmt_http_date(now));
    if let Some(n) = content_length {
        let _ = write!(out, "Content-Length: {n}\r\n");
    }
    for (k, v) in extra {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if !keep_alive {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    w.write_all(&bytes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let ok = |t: &str, want: &[&str], slash: bool| {
            let (segs, s) = decode_path(t.as_bytes()).expect(t);
            assert_eq!(segs, want, "{t}");
            assert_eq!(s, slash, "{t}");
        };
        ok("/", &[], true);
        ok("/a/b.html?x=1", &["a", "b.html"], false);
        ok("/a//./b/", &["a", "b"], true);
        ok("/h%C3%A9llo%20w", &["héllo w"], false);
        ok("/x/.ringhost", &["x", ".ringhost"], false);
        for bad in [
            "/..",
            "/a/../b",
            "/%2e%2e/x",
            "/%2E%2e",
            "/a%2fb",
            "/a%5cb",
            "/a%00",
            "/%zz",
            "/%4",
            "x",
            "/.ringhost/site.toml",
            "/.RINGHOST",
            "/%2eringhost/x",
            "/%ff",
        ] {
            assert!(decode_path(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges() {
        use RangeReq::*;
        let r = |v: &str, len| parse_range(v.as_bytes(), len);
        assert_eq!(r("bytes=0-9", 100), Part { start: 0, end: 9 });
        assert_eq!(r("bytes=90-", 100), Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-10", 100), Part { start: 90, end: 99 });
        assert_eq!(r("bytes=-1000", 100), Part { start: 0, end: 99 });
        assert_eq!(r("bytes=50-1000", 100), Part { start: 50, end: 99 });
        assert_eq!(r("bytes=100-", 100), Unsatisfiable);
        assert_eq!(r("bytes=100-200", 100), Unsatisfiable);
        assert_eq!(r("bytes=-0", 100), Unsatisfiable);
        assert_eq!(r("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(r("bytes=5-2", 100), Full);
        assert_eq!(r("bytes=0-1,5-6", 100), Full);
        assert_eq!(r("items=0-1", 100), Full);
        assert_eq!(r("bytes=+1-2", 100), Full);
        assert_eq!(r("bytes=99999999999999999999999-", 100), Full);
    }

    #[test]
    fn etags() {
        assert!(none_match(b"\"a\", \"b\"", "\"b\""));
        assert!(none_match(b"W/\"b\"", "\"b\""));
        assert!(none_match(b"*", "\"b\""));
        assert!(!none_match(b"\"c\"", "\"b\""));
    }
}
