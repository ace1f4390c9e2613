//! Which site a host name belongs to.
//!
//! A [`RouteTable`] maps domain patterns to a value (a site id):
//!
//! - an exact name, `example.com`, matches only that name;
//! - a wildcard, `*.example.com`, matches names with exactly **one** more
//!   label in front: `www.example.com`, not `example.com` and not
//!   `a.b.example.com`. This is the rule of TLS certificates (RFC 6125
//!   §6.4.3) and of most proxies, so a site's wildcard domain and its
//!   wildcard certificate cover the same names.
//!
//! An exact name beats a wildcard. Under the one-label rule at most one
//! wildcard can match a name (the one for its parent), so "the longest
//! wildcard wins" holds trivially: `*.a.example.com` is the only wildcard
//! that can match `x.a.example.com`; `*.example.com` never does.
//!
//! Patterns and looked-up names are compared in the normal form of
//! [`crate::host::normalize_dns_name`] (lowercase, no trailing dot).

use std::collections::HashMap;

use crate::host::{InvalidHost, normalize_dns_name};

/// Why a pattern was refused. The table was not changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error(transparent)]
    InvalidName(#[from] InvalidHost),
    #[error("invalid domain pattern '{0}': '*' may only be a whole first label followed by a name")]
    BadWildcard(String),
}

/// A parsed domain pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// Matches this name only.
    Exact(String),
    /// `*.<suffix>`: matches any name of one label followed by `suffix`.
    Wildcard(String),
}

impl Pattern {
    pub fn parse(pattern: &str) -> Result<Pattern, PatternError> {
        if let Some(suffix) = pattern.strip_prefix("*.") {
            if suffix.contains('*') {
                return Err(PatternError::BadWildcard(pattern.to_owned()));
            }
            Ok(Pattern::Wildcard(normalize_dns_name(suffix.as_bytes())?))
        } else if pattern.contains('*') {
            Err(PatternError::BadWildcard(pattern.to_owned()))
        } else {
            Ok(Pattern::Exact(normalize_dns_name(pattern.as_bytes())?))
        }
    }
}

/// Domain patterns to values. Lookups cost at most two hash probes.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    exact: HashMap<String, T>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, T>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<T> RouteTable<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pattern; returns the value it replaces, if any.
    pub fn insert(&mut self, pattern: &str, value: T) -> Result<Option<T>, PatternError> {
        Ok(match Pattern::parse(pattern)? {
            Pattern::Exact(name) => self.exact.insert(name, value),
            Pattern::Wildcard(suffix) => self.wildcard.insert(suffix, value),
        })
    }

    /// Removes a pattern; returns its value, if it was there.
    pub fn remove(&mut self, pattern: &str) -> Result<Option<T>, PatternError> {
        Ok(match Pattern::parse(pattern)? {
            Pattern::Exact(name) => self.exact.remove(&name),
            Pattern::Wildcard(suffix) => self.wildcard.remove(&suffix),
        })
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value for `host`: its exact pattern if there is one, else the
    /// wildcard for its parent. `host` may carry uppercase letters or a
    /// trailing dot; names from [`crate::http`] and [`crate::tls`] are
    /// already normal and cost no allocation.
    pub fn lookup(&self, host: &str) -> Option<&T> {
        let trimmed = host.strip_suffix('.').unwrap_or(host);
        if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.lookup_normal(&trimmed.to_ascii_lowercase());
        }
        self.lookup_normal(trimmed)
    }

    fn lookup_normal(&self, host: &str) -> Option<&T> {
        if host.is_empty() {
            return None;
        }
        if let Some(v) = self.exact.get(host) {
            return Some(v);
        }
        let (first, parent) = host.split_once('.')?;
        if first.is_empty() {
            return None;
        }
        self.wildcard.get(parent)
    }
}
