//! Publishing: the gossip keys this node owns about its sites, derived
//! from its state and diffed against what it published.

use std::collections::{BTreeMap, BTreeSet};

use super::state::Node;
use super::types::Action;
use crate::election::Role;
use crate::ids::SiteName;
use crate::site::{self, CopyKey};

impl Node {
    /// Diffs the keys this node should publish about `sites` against what
    /// it published (the keys of other sites did not change).
    pub(super) fn publish(&mut self, sites: &BTreeSet<SiteName>) {
        let mut want: BTreeMap<String, String> = BTreeMap::new();
        let mut mine: BTreeSet<String> = BTreeSet::new();
        for site in sites {
            let copy = self.copies.get(site);
            let tombstone = self.tombstones.get(site).copied();
            let unchanged = self.published_from.get(site).is_some_and(|(from, t)| {
                *t == tombstone
                    && match (from, copy) {
                        (None, None) => true,
                        (Some((role, epoch, head, spec)), Some(c)) => {
                            *role == c.role
                                && *epoch == c.epoch
                                && *head == c.head()
                                && spec.as_ref() == c.spec.as_ref()
                        }
                        _ => false,
                    }
            });
            if unchanged {
                continue;
            }
            self.published_from.insert(
                site.clone(),
                (
                    copy.map(|c| (c.role, c.epoch, c.head(), c.spec.clone())),
                    tombstone,
                ),
            );
            mine.insert(site::site_key(site));
            mine.insert(site::spec_key(site));
            mine.insert(site::deleted_key(site));
            let Some(c) = copy else {
                continue;
            };
            let (Some(head), Some(spec)) = (c.head(), c.spec.as_ref()) else {
                continue;
            };
            want.insert(
                site::site_key(site),
                site::encode_copy(&CopyKey {
                    role: c.role,
                    epoch: c.epoch,
                    seq: head.seq,
                    guid: head.guid,
                    spec_id: spec.id,
                }),
            );
            if c.role == Role::Master {
                want.insert(site::spec_key(site), site::encode_spec(spec));
            }
        }
        for site in sites {
            if let Some(id) = self.tombstones.get(site) {
                want.insert(site::deleted_key(site), id.to_string());
            }
        }
        let gone: Vec<String> = mine
            .into_iter()
            .filter(|k| self.published.contains_key(k) && !want.contains_key(k))
            .collect();
        for key in gone {
            self.published.remove(&key);
            self.actions.push_back(Action::Unpublish { key });
        }
        for (key, value) in want {
            if self.published.get(&key) != Some(&value) {
                self.published.insert(key.clone(), value.clone());
                self.actions.push_back(Action::Publish { key, value });
            }
        }
    }
}
