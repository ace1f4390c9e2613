//! The routing snapshot the daemon publishes: which site a host name
//! belongs to, and where that site is served right now.
//!
//! The daemon builds a new [`Routes`] whenever its view changes and sends it
//! through a `tokio::sync::watch` channel as an `Arc<Routes>`; the proxy
//! reads the latest snapshot once per request (HTTP) or connection (TLS)
//! and never blocks the publisher. A snapshot is immutable once published.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::route::{PatternError, RouteTable};

/// How a site's content is produced on the node that is its master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// An HTTP/1.1 server on this address, usually a command runtime's
    /// loopback port ([`crate::runtime`]).
    Tcp(SocketAddr),
    /// Files served from this directory by [`crate::static_files`].
    Static(PathBuf),
}

/// Where a site is served, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// This node is the site's master.
    Local {
        backend: Backend,
        /// The site's own TLS server (passthrough target for `--https`);
        /// `None` when the site serves no TLS: TLS connections for it are
        /// closed.
        tls: Option<SocketAddr>,
    },
    /// Another node is master; requests go through a tunnel to it.
    Remote { node: String },
    /// No master is known (election in progress, no quorum): answer 503.
    Unavailable { retry_after_s: u32 },
}

/// Domain patterns to sites, and each site's [`Target`].
#[derive(Debug, Clone, Default)]
pub struct Routes {
    domains: RouteTable<String>,
    sites: HashMap<String, Target>,
}

/// What a host name resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved<'a> {
    /// No pattern matches the host.
    UnknownHost,
    /// A pattern matches but the site has no target (a stale domain).
    NoTarget {
        site: &'a str,
    },
    Site {
        site: &'a str,
        target: &'a Target,
    },
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a site with its domain patterns (`example.com`,
    /// `*.example.com`). On error nothing was changed.
    pub fn insert_site(
        &mut self,
        site: &str,
        domains: &[&str],
        target: Target,
    ) -> Result<(), PatternError> {
        // Check every pattern first so that an error changes nothing.
        for d in domains {
            crate::route::Pattern::parse(d)?;
        }
        for d in domains {
            self.domains.insert(d, site.to_owned())?;
        }
        self.sites.insert(site.to_owned(), target);
        Ok(())
    }

    /// Sets a known site's target; returns false if the site is unknown.
    pub fn set_target(&mut self, site: &str, target: Target) -> bool {
        match self.sites.get_mut(site) {
            Some(t) => {
                *t = target;
                true
            }
            None => false,
        }
    }

    /// The site serving `host` (normalised or not; see
    /// [`RouteTable::lookup`]).
    pub fn site_for_host(&self, host: &str) -> Option<&str> {
        self.domains.lookup(host).map(String::as_str)
    }

    pub fn target(&self, site: &str) -> Option<&Target> {
        self.sites.get(site)
    }

    pub fn resolve(&self, host: &str) -> Resolved<'_> {
        let Some(site) = self.site_for_host(host) else {
            return Resolved::UnknownHost;
        };
        match self.sites.get(site) {
            Some(target) => Resolved::Site { site, target },
            None => Resolved::NoTarget { site },
        }
    }

    /// Iterates over the sites and their targets, in no particular order.
    pub fn sites(&self) -> impl Iterator<Item = (&str, &Target)> {
        self.sites.iter().map(|(k, v)| (k.as_str(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_by_host() {
        let mut r = Routes::new();
        let t = Target::Remote { node: "n2".into() };
        r.insert_site(
            "blog",
            &["blog.example.com", "*.blog.example.com"],
            t.clone(),
        )
        .expect("valid patterns");
        assert_eq!(
            r.resolve("WWW.Blog.Example.com."),
            Resolved::Site {
                site: "blog",
                target: &t
            }
        );
        assert_eq!(r.resolve("example.com"), Resolved::UnknownHost);
        assert!(r.insert_site("x", &["ok.com", "bad*.com"], t).is_err());
        assert_eq!(r.resolve("ok.com"), Resolved::UnknownHost);
    }
}
