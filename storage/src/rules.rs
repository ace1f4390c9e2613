//! The pure rules both stores apply before they touch anything: what a
//! receive may apply onto, and which paths inside a site are valid.

use std::path::{Component, Path};

use model::SiteName;

use crate::error::{Error, Result};
use crate::types::{Guid, Snapshot, StreamHeader};

/// The receive rule both stores apply before touching anything: a full
/// stream only creates a new site; an incremental one applies only onto the
/// receiver's newest snapshot. `chain` is `None` when the site does not
/// exist.
pub fn check_receive(site: &SiteName, chain: Option<&[Snapshot]>, h: StreamHeader) -> Result<()> {
    match (chain, h.from) {
        (None, None) => Ok(()),
        (Some(_), None) => Err(Error::SiteExists { site: site.clone() }),
        (None, Some(_)) => Err(Error::NoSuchSite { site: site.clone() }),
        (Some(chain), Some(base)) => {
            if chain.iter().any(|s| s.guid == h.to) {
                return Err(Error::AlreadyReceived {
                    site: site.clone(),
                    guid: h.to,
                });
            }
            let newest = chain.last().map(|s| s.guid);
            if newest == Some(base) {
                return Ok(());
            }
            if chain.iter().any(|s| s.guid == base) {
                return Err(Error::Diverged {
                    site: site.clone(),
                    base,
                    newest: newest.unwrap_or(Guid(0)),
                    stderr: String::new(),
                });
            }
            Err(Error::WrongBase {
                site: site.clone(),
                base,
                newest: newest.map_or_else(|| "none".to_owned(), |g| g.to_string()),
            })
        }
    }
}

/// Checks a relative path inside a site: not empty, not absolute, no `..`.
pub(crate) fn check_rel_path(site: &SiteName, path: &Path) -> Result<()> {
    let ok = !path.as_os_str().is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidPath {
            site: site.clone(),
            path: path.display().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::test_snapshot as snap;

    fn site() -> SiteName {
        "blog".parse().expect("valid literal")
    }

    #[test]
    fn receive_rules() {
        let chain = [snap(1, 11), snap(2, 22)];
        let h = |from: Option<u64>, to| StreamHeader {
            from: from.map(Guid),
            to: Guid(to),
        };
        assert!(check_receive(&site(), None, h(None, 1)).is_ok());
        assert!(check_receive(&site(), Some(&chain), h(Some(22), 33)).is_ok());
        assert!(matches!(
            check_receive(&site(), Some(&chain), h(None, 33)),
            Err(Error::SiteExists { .. })
        ));
        assert!(matches!(
            check_receive(&site(), Some(&chain), h(Some(11), 33)),
            Err(Error::Diverged { .. })
        ));
        assert!(matches!(
            check_receive(&site(), Some(&chain), h(Some(5), 33)),
            Err(Error::WrongBase { .. })
        ));
        assert!(matches!(
            check_receive(&site(), Some(&chain), h(Some(11), 22)),
            Err(Error::AlreadyReceived { .. })
        ));
        assert!(matches!(
            check_receive(&site(), None, h(Some(11), 22)),
            Err(Error::NoSuchSite { .. })
        ));
    }
}
