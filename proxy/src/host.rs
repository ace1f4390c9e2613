//! Host names as the proxy routes on them.
//!
//! Every name that reaches routing — from a `Host` header, an absolute-form
//! request target, a TLS SNI extension or a configured domain pattern — goes
//! through [`normalize_dns_name`], so one spelling of a name always has one
//! key: ASCII lowercase, no trailing dot, labels of 1 to 63 bytes, at most
//! 253 bytes in all. Percent-encoded and non-ASCII names are refused rather
//! than decoded: clients send IDNs as A-labels (`xn--...`).

/// Why a host name was refused. Nothing was routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host '{value}': {reason}")]
pub struct InvalidHost {
    /// The refused bytes, lossily decoded and cut to a printable length.
    pub value: String,
    pub reason: &'static str,
}

impl InvalidHost {
    pub(crate) fn new(raw: &[u8], reason: &'static str) -> Self {
        const SHOWN: usize = 64;
        let cut = &raw[..raw.len().min(SHOWN)];
        let mut value = String::from_utf8_lossy(cut).into_owned();
        if raw.len() > SHOWN {
            value.push_str("...");
        }
        InvalidHost { value, reason }
    }
}

/// The longest DNS name, in bytes, without the trailing dot (RFC 1035).
pub const MAX_NAME_LEN: usize = 253;
/// The longest DNS label, in bytes (RFC 1035).
pub const MAX_LABEL_LEN: usize = 63;

/// Checks and normalises a DNS name (or IPv4 literal): lowercases it and
/// removes one trailing dot. Letters, digits, `-` and `_` are accepted in
/// labels (`_` is common in real names even though it is not a hostname
/// character).
pub fn normalize_dns_name(raw: &[u8]) -> Result<String, InvalidHost> {
    let name = raw.strip_suffix(b".").unwrap_or(raw);
    if name.is_empty() {
        return Err(InvalidHost::new(raw, "empty name"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidHost::new(raw, "longer than 253 bytes"));
    }
    for label in name.split(|&b| b == b'.') {
        if label.is_empty() {
            return Err(InvalidHost::new(raw, "empty label"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(InvalidHost::new(raw, "label longer than 63 bytes"));
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(InvalidHost::new(
                raw,
                "only letters, digits, '-', '_' and '.' are allowed",
            ));
        }
    }
    let mut out = String::with_capacity(name.len());
    // Every byte was checked to be ASCII above, so each maps to one char.
    out.extend(name.iter().map(|&b| char::from(b.to_ascii_lowercase())));
    Ok(out)
}

/// Parses the `host [ ":" port ]` of a `Host` header or an absolute-form
/// target (RFC 9110 §7.2) and returns the normalised host without the port.
///
/// An IPv6 literal (`[::1]:8080`) comes back without its brackets,
/// lowercased (`::1`); it is checked for its character set only, not
/// canonicalised. A port, when present, must be 1 to 5 digits (an empty port
/// after `:` is allowed by the URI grammar and accepted).
pub fn parse_authority_host(raw: &[u8]) -> Result<String, InvalidHost> {
    if raw.is_empty() {
        return Err(InvalidHost::new(raw, "empty host"));
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return Err(InvalidHost::new(raw, "unclosed '[' in IPv6 literal"));
        };
        let literal = &rest[..close];
        let after = &rest[close + 1..];
        let port = match after {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return Err(InvalidHost::new(raw, "junk after IPv6 literal")),
        };
        check_ipv6(raw, literal)?;
        let mut out = String::with_capacity(literal.len());
        out.extend(literal.iter().map(|&b| char::from(b.to_ascii_lowercase())));
        (Ok(out), port)
    } else {
        match raw.iter().rposition(|&b| b == b':') {
            Some(colon) => (normalize_dns_name(&raw[..colon]), Some(&raw[colon + 1..])),
            None => (normalize_dns_name(raw), None),
        }
    };
    if let Some(port) = port
        && (port.len() > 5 || !port.iter().all(u8::is_ascii_digit))
    {
        return Err(InvalidHost::new(raw, "port must be at most 5 digits"));
    }
    host
}

fn check_ipv6(raw: &[u8], literal: &[u8]) -> Result<(), InvalidHost> {
    // 8 groups of 4 hex digits and 7 colons is the longest plain form; an
    // embedded IPv4 tail is shorter. Zone ids (RFC 6874) are refused.
    if literal.len() < 2 || literal.len() > 45 {
        return Err(InvalidHost::new(raw, "bad IPv6 literal length"));
    }
    if !literal.contains(&b':')
        || !literal
            .iter()
            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
    {
        return Err(InvalidHost::new(raw, "bad IPv6 literal"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str, want: &str) {
        assert_eq!(
            parse_authority_host(raw.as_bytes()).as_deref(),
            Ok(want),
            "{raw}"
        );
    }

    fn bad(raw: &str) {
        assert!(
            parse_authority_host(raw.as_bytes()).is_err(),
            "{raw} should fail"
        );
    }

    #[test]
    fn authority_forms() {
        ok("example.com", "example.com");
        ok("Example.COM", "example.com");
        ok("example.com.", "example.com");
        ok("example.com:8080", "example.com");
        ok("example.com.:80", "example.com");
        ok("example.com:", "example.com");
        ok("127.0.0.1:80", "127.0.0.1");
        ok("[::1]", "::1");
        ok("[::1]:8443", "::1");
        ok("[2001:DB8::1]", "2001:db8::1");
        ok("[::ffff:192.0.2.1]:1", "::ffff:192.0.2.1");
        ok("_dmarc.example.com", "_dmarc.example.com");
    }

    #[test]
    fn refused_authorities() {
        for raw in [
            "",
            ".",
            "example..com",
            ".example.com",
            "example.com..",
            "exa mple.com",
            "example.com:80:80",
            "example.com:abc",
            "example.com:123456",
            "user@example.com",
            "example.com/path",
            "[::1",
            "[::1]x",
            "[::1]:x",
            "[]",
            "[fe80::1%25eth0]",
            "[example.com]",
            "ex%41mple.com",
            "bücher.de",
        ] {
            bad(raw);
        }
        let long_label = format!("{}.com", "a".repeat(64));
        bad(&long_label);
        let long_name = vec!["abc"; 64].join(".");
        assert!(long_name.len() > MAX_NAME_LEN);
        bad(&long_name);
        let max_name = format!("{}.{}", "a".repeat(63), vec!["b"; 95].join("."));
        assert_eq!(max_name.len(), 253);
        ok(&max_name, &max_name);
    }
}
