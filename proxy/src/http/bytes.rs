//! Byte classes of RFC 9110 and the reason phrases the proxy sends.

/// `tchar` of RFC 9110 §5.6.2.
/// The reason phrase of a status code the proxy sends itself.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A byte allowed in a field value or reason phrase: visible ASCII, space,
/// tab and obs-text (RFC 9110 §5.5). No CR, LF, NUL or other controls.
pub(crate) fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// The non-empty elements of a comma-separated header list, trimmed.
pub(super) fn list_elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

pub(super) fn trim_ows(v: &[u8]) -> &[u8] {
    let lead = v.iter().take_while(|&&b| is_ows(b)).count();
    let trail = v[lead..].iter().rev().take_while(|&&b| is_ows(b)).count();
    &v[lead..v.len() - trail]
}

pub(super) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}
