//! Domain patterns to sites.

use proxy::route::{Pattern, PatternError, RouteTable};

fn table(patterns: &[(&str, &str)]) -> RouteTable<String> {
    let mut t = RouteTable::new();
    for (p, site) in patterns {
        t.insert(p, (*site).to_owned()).expect("valid pattern");
    }
    t
}

#[test]
fn exact_and_wildcard() {
    let t = table(&[
        ("example.com", "apex"),
        ("*.example.com", "wild"),
        ("www.example.com", "www"),
        ("*.a.example.com", "deep-wild"),
        ("Shop.Example.ORG.", "shop"),
    ]);
    let at = |h: &str| t.lookup(h).map(String::as_str);
    assert_eq!(at("example.com"), Some("apex"));
    // Exact beats wildcard.
    assert_eq!(at("www.example.com"), Some("www"));
    assert_eq!(at("blog.example.com"), Some("wild"));
    // One label only: a deeper name matches only its parent's wildcard.
    assert_eq!(at("x.a.example.com"), Some("deep-wild"));
    assert_eq!(at("x.b.example.com"), None);
    assert_eq!(at("a.example.com"), Some("wild"));
    // Normal form: case and a trailing dot do not matter.
    assert_eq!(at("BLOG.Example.com."), Some("wild"));
    assert_eq!(at("shop.example.org"), Some("shop"));
    assert_eq!(at("other.org"), None);
    assert_eq!(at(""), None);
    assert_eq!(at("."), None);
    assert_eq!(at(".example.com"), None);
    assert_eq!(at("com"), None);
    assert_eq!(t.len(), 5);
}

#[test]
fn wildcard_does_not_match_its_apex() {
    let t = table(&[("*.example.com", "wild")]);
    assert_eq!(t.lookup("example.com"), None);
    assert_eq!(t.lookup("xexample.com"), None);
}

#[test]
fn insert_replace_remove() {
    let mut t = RouteTable::new();
    assert_eq!(t.insert("*.example.com", 1), Ok(None));
    assert_eq!(t.insert("*.EXAMPLE.com.", 2), Ok(Some(1)));
    assert_eq!(t.lookup("a.example.com"), Some(&2));
    assert_eq!(t.remove("*.example.com"), Ok(Some(2)));
    assert_eq!(t.remove("*.example.com"), Ok(None));
    assert!(t.is_empty());
}

#[test]
fn bad_patterns() {
    for p in [
        "*",
        "**.example.com",
        "*example.com",
        "a.*.example.com",
        "www.*",
        "*.*.com",
    ] {
        assert!(
            matches!(Pattern::parse(p), Err(PatternError::BadWildcard(_))),
            "{p}: {:?}",
            Pattern::parse(p)
        );
    }
    for p in ["", "*.", "a..b", "exa mple.com", "*.a..b", "example.com:80"] {
        assert!(
            matches!(Pattern::parse(p), Err(PatternError::InvalidName(_))),
            "{p}: {:?}",
            Pattern::parse(p)
        );
    }
    assert_eq!(
        Pattern::parse("*.Example.com"),
        Ok(Pattern::Wildcard("example.com".to_owned()))
    );
    assert_eq!(
        Pattern::parse("Example.com."),
        Ok(Pattern::Exact("example.com".to_owned()))
    );
}
