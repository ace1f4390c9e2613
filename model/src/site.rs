//! Sites: the spec that travels with a site's data, and the gossip keys
//! through which nodes tell each other about their copies.
//!
//! Key formats (docs/gossip-keys.md is the reference):
//!
//! - `site:<name>` → [`CopyKey`] as JSON: what the writing node holds.
//! - `spec:<name>` → [`SiteSpec`] as JSON: written by the site's master.
//! - `deleted:<name>` → the deleted incarnation's spec id (decimal).
//! - `vote:<name>` → [`Vote`] as JSON: the writing node's vote in the
//!   site's election, durable before it is published.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::election::{CopyState, Epoch, Head, Role};
use crate::ids::{InvalidName, NodeName, SiteName};

/// A domain a site answers to: a DNS name, or `*.` and a DNS name (a
/// wildcard matching exactly one more label). Stored lowercase, without a
/// trailing dot.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Domain(String);

impl Domain {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Domain {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, InvalidName> {
        let fail = |reason| {
            Err(InvalidName {
                kind: "domain",
                value: s.to_owned(),
                reason,
            })
        };
        let lower = s.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let bare = name.strip_prefix("*.").unwrap_or(name);
        if bare.is_empty() {
            return fail("must not be empty");
        }
        if name.len() > 253 {
            return fail("must be at most 253 characters");
        }
        for label in bare.split('.') {
            if label.is_empty() || label.len() > 63 {
                return fail("every label must have 1 to 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return fail(
                    "may hold only letters, digits, '-', '_' and '.' (and a leading '*.')",
                );
            }
            if label.starts_with('-') || label.ends_with('-') {
                return fail("a label must not start or end with '-'");
            }
        }
        if !bare.contains('.') && name.starts_with("*.") {
            return fail("a wildcard needs at least two labels after '*.'");
        }
        Ok(Domain(name.to_owned()))
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Serialize for Domain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Domain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// How a site is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Runtime {
    /// The node serves the site's files itself.
    Static,
    /// The master runs `cmd` (via `sh -c`) in the site's directory with
    /// `PORT` in its environment, and forwards requests to that port.
    Command { cmd: String },
}

/// A site's spec. It is kept inside the site's dataset
/// (`.ringhost/site.toml`), so whoever holds the data holds the spec, and
/// its master gossips it so every proxy can route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    pub name: SiteName,
    pub domains: Vec<Domain>,
    /// How many copies the site keeps, the master's included.
    pub replicas: u8,
    pub runtime: Runtime,
    /// Identifies this incarnation of the name: a site deleted and created
    /// again under the same name has another id, so a tombstone of the old
    /// one never deletes the new one.
    pub id: u64,
    /// Grows with every change of the spec.
    pub version: u64,
}

/// The value of a `site:<name>` key: one node's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyKey {
    pub role: Role,
    pub epoch: Epoch,
    pub seq: u64,
    /// Decimal string: JSON readers that use doubles would round a u64.
    #[serde(with = "guid_string")]
    pub guid: u64,
    /// The id of the spec (incarnation) this copy belongs to.
    pub spec_id: u64,
}

impl CopyKey {
    pub fn state(&self) -> CopyState {
        CopyState {
            role: self.role,
            epoch: self.epoch,
            head: Head {
                seq: self.seq,
                guid: self.guid,
            },
        }
    }
}

mod guid_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

pub const SITE_PREFIX: &str = "site:";
pub const SPEC_PREFIX: &str = "spec:";
pub const DELETED_PREFIX: &str = "deleted:";
pub const VOTE_PREFIX: &str = "vote:";

/// The value of a `vote:<name>` key: the node that wrote it votes for
/// `candidate` to be master at `epoch`. A node votes at most once per epoch
/// of a site (its vote is kept on disk before it is published) and only
/// for a higher epoch than its last vote, so two candidates cannot both
/// collect a majority for one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vote {
    pub epoch: Epoch,
    #[serde(rename = "for")]
    pub candidate: NodeName,
}

pub fn vote_key(site: &SiteName) -> String {
    format!("{VOTE_PREFIX}{site}")
}

pub fn encode_vote(v: &Vote) -> String {
    serde_json::to_string(v).expect("a Vote always serializes")
}

pub fn site_key(site: &SiteName) -> String {
    format!("{SITE_PREFIX}{site}")
}

pub fn spec_key(site: &SiteName) -> String {
    format!("{SPEC_PREFIX}{site}")
}

pub fn deleted_key(site: &SiteName) -> String {
    format!("{DELETED_PREFIX}{site}")
}

/// One gossiped key about a site, parsed. Keys that do not parse are
/// ignored by readers (and are a bug in the writer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteKey {
    Copy(SiteName, CopyKey),
    Spec(SiteName, SiteSpec),
    Deleted(SiteName, u64),
    Vote(SiteName, Vote),
}

/// Parses a gossiped key/value about a site; `None` for other keys and for
/// values that do not parse.
pub fn parse_site_key(key: &str, value: &str) -> Option<SiteKey> {
    if let Some(name) = key.strip_prefix(SITE_PREFIX) {
        let site = name.parse().ok()?;
        return serde_json::from_str(value)
            .ok()
            .map(|c| SiteKey::Copy(site, c));
    }
    if let Some(name) = key.strip_prefix(SPEC_PREFIX) {
        let site: SiteName = name.parse().ok()?;
        let spec: SiteSpec = serde_json::from_str(value).ok()?;
        return (spec.name == site).then_some(SiteKey::Spec(site, spec));
    }
    if let Some(name) = key.strip_prefix(DELETED_PREFIX) {
        let site = name.parse().ok()?;
        return value.parse().ok().map(|id| SiteKey::Deleted(site, id));
    }
    if let Some(name) = key.strip_prefix(VOTE_PREFIX) {
        let site = name.parse().ok()?;
        return serde_json::from_str(value)
            .ok()
            .map(|v| SiteKey::Vote(site, v));
    }
    None
}

pub fn encode_copy(c: &CopyKey) -> String {
    serde_json::to_string(c).expect("a CopyKey always serializes")
}

pub fn encode_spec(s: &SiteSpec) -> String {
    serde_json::to_string(s).expect("a SiteSpec always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        for (raw, norm) in [
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            ("*.example.com", "*.example.com"),
            ("a_b.example", "a_b.example"),
            ("localhost", "localhost"),
        ] {
            assert_eq!(raw.parse::<Domain>().expect(raw).as_str(), norm);
        }
        for bad in [
            "", ".", "a..b", "-a.com", "a-.com", "*.com", "a b.com", "*", "x.*.com",
        ] {
            assert!(bad.parse::<Domain>().is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_round_trip() {
        let site: SiteName = "blog".parse().expect("name");
        let c = CopyKey {
            role: Role::Master,
            epoch: Epoch(3),
            seq: 17,
            guid: u64::MAX - 1,
            spec_id: 9,
        };
        let v = encode_copy(&c);
        assert!(v.contains("\"18446744073709551614\""), "{v}");
        assert_eq!(
            parse_site_key(&site_key(&site), &v),
            Some(SiteKey::Copy(site.clone(), c))
        );
        let spec = SiteSpec {
            name: site.clone(),
            domains: vec!["blog.example".parse().expect("domain")],
            replicas: 3,
            runtime: Runtime::Command {
                cmd: "python3 -m http.server $PORT".into(),
            },
            id: 1,
            version: 1,
        };
        assert_eq!(
            parse_site_key(&spec_key(&site), &encode_spec(&spec)),
            Some(SiteKey::Spec(site.clone(), spec.clone()))
        );
        // A spec under another site's key is refused.
        assert_eq!(parse_site_key("spec:other", &encode_spec(&spec)), None);
        assert_eq!(
            parse_site_key(&deleted_key(&site), "9"),
            Some(SiteKey::Deleted(site.clone(), 9))
        );
        let vote = Vote {
            epoch: Epoch(4),
            candidate: "n2".parse().expect("name"),
        };
        assert_eq!(encode_vote(&vote), r#"{"epoch":4,"for":"n2"}"#);
        assert_eq!(
            parse_site_key(&vote_key(&site), &encode_vote(&vote)),
            Some(SiteKey::Vote(site.clone(), vote))
        );
        assert_eq!(
            parse_site_key("vote:blog", r#"{"epoch":4,"for":"-x"}"#),
            None
        );
        assert_eq!(parse_site_key("node:zone", "a"), None);
        assert_eq!(parse_site_key("site:blog", "{garbage"), None);
    }
}
