//! Reading the view: the pure functions over a [`View`] that the proxy,
//! the admin API and the simulator use (members, holders, the serving
//! master, the quorum), and how a node indexes each new view by site and
//! marks what changed.

use std::collections::BTreeSet;

use super::state::{Node, SiteView, key_site};
use super::types::{MemberView, View};
use crate::election::{self, CopyState, Epoch, Holder, MasterDecision, Quorum};
use crate::ids::{NodeName, SiteName, Zone};
use crate::lease::{self};
use crate::site::{self, SiteKey, SiteSpec};

/// One member as the model sees it, from what gossip says about it: its
/// liveness, whether it left, its zone and its key/value pairs (keys that
/// are not site keys, or do not parse, are skipped) and its beat. The
/// daemon and the simulator both build their [`View`] with this and
/// [`view_of`].
pub fn member_view<'a>(
    alive: bool,
    left: bool,
    zone: Option<Zone>,
    keys: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> MemberView {
    let mut beat = None;
    let mut site_keys = Vec::new();
    for (k, v) in keys {
        if k == lease::BEAT_KEY {
            beat = lease::parse_beat(v);
        } else if let Some(sk) = site::parse_site_key(k, v) {
            site_keys.push(sk);
        }
    }
    MemberView {
        alive,
        left,
        zone,
        keys: site_keys,
        beat,
    }
}

/// The view from gossip's members: `(name, alive, left, zone, key/values)`
/// each, one entry per name (a later entry for the same name replaces an
/// earlier one).
pub fn view_of<'a, K>(
    members: impl IntoIterator<Item = (NodeName, bool, bool, Option<Zone>, K)>,
) -> View
where
    K: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut view = View::default();
    for (name, alive, left, zone, keys) in members {
        view.members
            .insert(name, member_view(alive, left, zone, keys));
    }
    view
}

/// The holders of `site` in `view`, as gossiped (for nodes that route, not
/// decide: the proxy and the admin API).
pub fn holders(view: &View, site: &SiteName) -> Vec<Holder> {
    let mut out = Vec::new();
    for (node, m) in &view.members {
        if m.left {
            continue;
        }
        for k in &m.keys {
            if let SiteKey::Copy(s, ck) = k
                && s == site
            {
                out.push(Holder {
                    node: node.clone(),
                    alive: m.alive,
                    copy: ck.state(),
                });
            }
        }
    }
    out
}

/// The node that serves `site` as master now, if any: a live master claim
/// that the election keeps. (A pending election is not a master yet.)
pub fn serving_master(view: &View, site: &SiteName) -> Option<(NodeName, Epoch)> {
    let holders = holders(view, site);
    let quorum = Quorum {
        known_members: 1,
        alive_members: 1,
        guard: false,
    };
    match election::master(site, &holders, quorum) {
        MasterDecision::Keep { node, epoch } => Some((node, epoch)),
        _ => None,
    }
}

/// The membership `me` sees for the quorum guard: the members it knows
/// (left ones excepted) and how many of them are alive, itself included.
/// A node serves and promotes with the guard on only while
/// `allows_promotion()` holds.
///
/// `remembered` are members known from before a restart
/// ([`Node::known_members`]): they count as known unless the view says they
/// left.
pub fn quorum_of(
    view: &View,
    me: &NodeName,
    guard: bool,
    remembered: &BTreeSet<NodeName>,
) -> Quorum {
    let known = known_count(view, me, remembered);
    let alive = (view
        .members
        .iter()
        .filter(|(n, m)| (m.alive && !m.left) || *n == me)
        .count()
        + usize::from(!view.members.contains_key(me)))
    .min(known);
    Quorum {
        known_members: known,
        alive_members: alive,
        guard,
    }
}

/// The members `me` knows: those of the view that did not leave, itself,
/// and the `remembered` ones the view does not list (a member the view
/// lists as left is not known).
fn known_count(view: &View, me: &NodeName, remembered: &BTreeSet<NodeName>) -> usize {
    let listed = view
        .members
        .iter()
        .filter(|(n, m)| !m.left || *n == me)
        .count();
    let me_unlisted = usize::from(!view.members.contains_key(me));
    let extra = remembered
        .iter()
        .filter(|n| *n != me && !view.members.contains_key(*n))
        .count();
    listed + me_unlisted + extra
}

impl Node {
    pub(super) fn live_members(&self) -> impl Iterator<Item = (&NodeName, &MemberView)> {
        self.view
            .members
            .iter()
            .filter(|(n, m)| (m.alive && !m.left) || **n == self.cfg.name)
    }

    /// The membership that keeping a master looks at: every live member
    /// counts.
    pub(super) fn quorum(&self) -> Quorum {
        self.quorum_of(|_| true)
    }

    /// The membership that a promotion looks at: a live member counts once
    /// it has been alive for `election_warmup`.
    pub(super) fn promotion_quorum(&self) -> Quorum {
        let now = self.now;
        let warmup = self.cfg.election_warmup;
        self.quorum_of(|n| {
            self.alive_since
                .get(n)
                .is_some_and(|since| since.plus(warmup) <= now)
        })
    }

    pub(super) fn quorum_of(&self, counts: impl Fn(&NodeName) -> bool) -> Quorum {
        // This node is a live member even before its view lists it.
        let me = &self.cfg.name;
        let listed = usize::from(self.view.members.contains_key(me));
        let known = known_count(&self.view, me, self.remembered_now());
        let alive = self
            .live_members()
            .filter(|(n, _)| *n == me || counts(n))
            .count()
            + 1
            - listed;
        let alive = alive.min(known);
        Quorum {
            known_members: known,
            alive_members: alive,
            guard: self.cfg.quorum_guard,
        }
    }

    /// What the view says about `site`; this node's own entry comes from
    /// its local state, which is never older than what it gossiped.
    pub(super) fn site_view(&self, site: &SiteName) -> SiteView {
        let mut sv = SiteView::default();
        let mut best_spec: Option<&SiteSpec> = None;
        for (node, k) in self.index.get(site).into_iter().flatten() {
            let Some(m) = self.view.members.get(node) else {
                continue;
            };
            if let Some(copy) = k.copy
                && *node != self.cfg.name
                && !m.left
            {
                sv.holders.push(Holder {
                    node: node.clone(),
                    alive: m.alive,
                    copy,
                });
            }
            if let Some(spec) = &k.spec
                && best_spec.is_none_or(|b| (spec.id, spec.version) > (b.id, b.version))
            {
                best_spec = Some(spec);
            }
            if let Some(id) = k.deleted {
                sv.deleted.insert(id);
            }
            if let Some(v) = &k.vote
                && *node != self.cfg.name
                && !m.left
            {
                sv.votes.push(v.clone());
                sv.vote_of.insert(node.clone(), v.clone());
            }
        }
        let best_spec = best_spec.cloned();
        if let Some(c) = self.copies.get(site)
            && let Some(head) = c.head()
        {
            sv.holders.push(Holder {
                node: self.cfg.name.clone(),
                alive: true,
                copy: CopyState {
                    role: c.role,
                    epoch: c.epoch,
                    head,
                },
            });
        }
        if let Some(id) = self.tombstones.get(site) {
            sv.deleted.insert(*id);
        }
        let local_spec = self.copies.get(site).and_then(|c| c.spec.clone());
        sv.spec = match (local_spec, best_spec) {
            (Some(l), Some(b)) => Some(if (b.id, b.version) > (l.id, l.version) {
                b
            } else {
                l
            }),
            (l, b) => l.or(b),
        };
        sv
    }

    /// Brings the index up to date with the view `v` that replaces
    /// `self.view`, and marks what changed: the sites of every member whose
    /// keys changed, or every site when a member's liveness, departure or
    /// zone changed.
    pub(super) fn reindex(&mut self, v: &View) {
        let old = &self.view;
        let mut changed: Vec<(&NodeName, Option<&MemberView>, Option<&MemberView>)> = Vec::new();
        for (name, m) in &v.members {
            match old.members.get(name) {
                Some(o) if o == m => {}
                o => changed.push((name, o, Some(m))),
            }
        }
        for (name, o) in &old.members {
            if !v.members.contains_key(name) {
                changed.push((name, Some(o), None));
            }
        }
        for (name, o, m) in changed {
            let flags = |x: Option<&MemberView>| x.map(|x| (x.alive, x.left, x.zone.clone()));
            if flags(o) != flags(m) {
                self.dirty_all = true;
                self.placed.clear();
            }
            if o.map(|x| &x.keys) == m.map(|x| &x.keys) {
                continue;
            }
            for k in o.map_or(&[][..], |x| &x.keys[..]) {
                let site = key_site(k);
                self.dirty.insert(site.clone());
                if let Some(entries) = self.index.get_mut(site) {
                    entries.remove(name);
                    if entries.is_empty() {
                        self.index.remove(site);
                    }
                }
            }
            for k in m.map_or(&[][..], |x| &x.keys[..]) {
                let site = key_site(k);
                self.dirty.insert(site.clone());
                let entry = self
                    .index
                    .entry(site.clone())
                    .or_default()
                    .entry(name.clone())
                    .or_default();
                match k {
                    SiteKey::Copy(_, ck) => entry.copy = Some(ck.state()),
                    SiteKey::Spec(_, spec) => entry.spec = Some(spec.clone()),
                    SiteKey::Deleted(_, id) => entry.deleted = Some(*id),
                    SiteKey::Vote(_, v) => entry.vote = Some(v.clone()),
                }
            }
        }
        self.index.retain(|_, entries| {
            entries.retain(|_, k| !k.is_empty());
            !entries.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::node::testing::*;
    use crate::node::*;

    use crate::election::{Epoch, Role};
    use crate::ids::Zone;

    use crate::site::{self, SiteKey};

    #[test]
    fn view_of_parses_site_keys_and_skips_the_rest() {
        let copy = site::encode_copy(&copy_key(Role::Master, 2, 5));
        let spec_json = site::encode_spec(&spec("blog", 3));
        let a_keys = [
            ("site:blog", copy.as_str()),
            ("spec:blog", spec_json.as_str()),
            ("node:zone", "z1"),
            ("site:bad", "{garbage"),
        ];
        let zone: Zone = "z1".parse().expect("zone");
        let v = view_of([
            (n("a"), true, false, Some(zone.clone()), a_keys.to_vec()),
            (n("b"), false, true, None, vec![("deleted:old", "9")]),
        ]);
        assert_eq!(v.members.len(), 2);
        let a = &v.members[&n("a")];
        assert!(a.alive && !a.left);
        assert_eq!(a.zone, Some(zone));
        assert_eq!(
            a.keys,
            vec![
                SiteKey::Copy(s("blog"), copy_key(Role::Master, 2, 5)),
                SiteKey::Spec(s("blog"), spec("blog", 3)),
            ]
        );
        let b = &v.members[&n("b")];
        assert!(!b.alive && b.left);
        assert_eq!(b.keys, vec![SiteKey::Deleted(s("old"), 9)]);
        assert_eq!(serving_master(&v, &s("blog")), Some((n("a"), Epoch(2))));
    }
}
