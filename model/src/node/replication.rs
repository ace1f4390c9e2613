//! Replication planning: taking a copy where placement (or a migration's
//! pin) wants one, a replica following its master's head, a diverged copy
//! stashing what the master lacks.

use super::state::{Copy, Node, SiteView};
use super::types::Action;
use crate::election::{Epoch, MasterDecision, Role};
use crate::ids::{NodeName, SiteName};
use crate::placement::placement;

impl Node {
    /// No copy here: take one if placement wants this node (or a
    /// migration pinned the site here) and a master serves the site.
    pub(super) fn take_a_copy(
        &mut self,
        site: &SiteName,
        sv: &SiteView,
        decision: &MasterDecision,
    ) {
        let me = self.cfg.name.clone();
        let now = self.now;
        let Some(spec) = sv.spec.clone() else { return };
        if sv.deleted.contains(&spec.id) {
            return;
        }
        let MasterDecision::Keep {
            node: master,
            epoch,
        } = decision
        else {
            return;
        };
        let (master, epoch) = (master.clone(), *epoch);
        let replicas = spec.replicas.max(1);
        let wanted = match self.placed.get(&(site.clone(), replicas)) {
            Some(w) => *w,
            None => {
                let live = self
                    .live_members()
                    .map(|(n, m)| (n, m.zone.as_ref()))
                    .collect::<Vec<_>>();
                let w = placement(site, live, usize::from(replicas)).contains(&me);
                self.placed.insert((site.clone(), replicas), w);
                w
            }
        };
        if master != me && (wanted || self.pinned.contains(site)) {
            let mut copy = Copy::new(Role::Replica, epoch, Vec::new(), Some(spec), now);
            copy.busy = true;
            self.copies.insert(site.clone(), copy);
            self.actions.push_back(Action::Pull {
                site: site.clone(),
                from: master,
            });
        }
    }

    /// A replica follows the master `node` at `epoch`: it takes the epoch
    /// on, and pulls when its head is not the master's.
    pub(super) fn follow(&mut self, site: &SiteName, sv: &SiteView, node: NodeName, epoch: Epoch) {
        let c = self.copies.get(site).expect("a planned copy");
        let master_head = sv
            .holders
            .iter()
            .find(|h| h.node == node)
            .map(|h| h.copy.head);
        let behind = match (c.head(), master_head) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(mine), Some(theirs)) => mine != theirs,
        };
        let c = self.copies.get_mut(site).expect("checked above");
        if c.epoch < epoch {
            c.epoch = epoch;
            self.actions.push_back(Action::Persist {
                site: site.clone(),
                role: Role::Replica,
                epoch,
            });
        }
        if behind {
            c.busy = true;
            self.actions.push_back(Action::Pull {
                site: site.clone(),
                from: node,
            });
        }
    }

    /// A diverged copy keeps what only it holds aside (a stash) and takes
    /// the master's history from their newest common snapshot.
    pub(super) fn plan_diverged(&mut self, site: &SiteName, decision: MasterDecision) {
        if let MasterDecision::Keep { node, .. } = decision
            && node != self.cfg.name
        {
            let c = self.copies.get_mut(site).expect("a planned copy");
            c.busy = true;
            self.actions.push_back(Action::Stash {
                site: site.clone(),
                from: node,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::node::testing::*;
    use crate::node::*;

    use crate::election::{Epoch, Role};

    use crate::site::{self, SiteKey};

    #[test]
    fn a_placed_node_pulls_a_full_copy_then_follows() {
        let mut b = started("b", vec![]);
        b.handle(Time(1), Event::View(master_view(true)));
        assert_eq!(
            drain(&mut b),
            vec![Action::Pull {
                site: s("blog"),
                from: n("a")
            }]
        );
        b.handle(
            Time(2),
            Event::Done(s("blog"), Outcome::Pulled(Ok(vec![head(1), head(5)]))),
        );
        assert_eq!(
            b.published().get("site:blog").map(String::as_str),
            Some(site::encode_copy(&copy_key(Role::Replica, 1, 5)).as_str())
        );
        assert!(!b.published().contains_key("spec:blog"));
        assert!(drain(&mut b).contains(&Action::Persist {
            site: s("blog"),
            role: Role::Replica,
            epoch: Epoch(1)
        }));
        // A failed pull is retried with backoff, not at once.
        let mut v = master_view(true);
        v.members.get_mut(&n("a")).expect("a").keys[0] =
            SiteKey::Copy(s("blog"), copy_key(Role::Master, 1, 6));
        b.handle(Time(3), Event::View(v));
        let acts = drain(&mut b);
        assert_eq!(acts.len(), 1, "{acts:?}");
        b.handle(
            Time(4),
            Event::Done(
                s("blog"),
                Outcome::Pulled(Err(PullError::Failed("x".into()))),
            ),
        );
        assert!(drain(&mut b).is_empty());
        let retry = b.poll_timeout().expect("a retry is scheduled");
        assert!(retry > Time(4));
        b.handle(retry, Event::Tick);
        assert_eq!(
            drain(&mut b),
            vec![Action::Pull {
                site: s("blog"),
                from: n("a")
            }]
        );
    }

    #[test]
    fn a_stale_master_steps_down_and_a_diverged_replica_is_stashed() {
        let mut a = started(
            "a",
            vec![blog_copy(Role::Master, 1, vec![head(5), head(6)], 3)],
        );
        let mut v = master_view(true);
        v.members.get_mut(&n("a")).expect("a").keys.clear();
        v.members.get_mut(&n("b")).expect("b").keys = vec![
            SiteKey::Copy(s("blog"), copy_key(Role::Master, 2, 5)),
            SiteKey::Spec(s("blog"), spec("blog", 3)),
        ];
        a.handle(Time(1), Event::View(v));
        let acts = drain(&mut a);
        assert!(demotes(&acts, "blog"), "{acts:?}");
        a.handle(Time(2), Event::Done(s("blog"), Outcome::Switched(Ok(()))));
        assert_eq!(
            drain(&mut a),
            vec![Action::Pull {
                site: s("blog"),
                from: n("b")
            }]
        );
        a.handle(
            Time(3),
            Event::Done(s("blog"), Outcome::Pulled(Err(PullError::Diverged))),
        );
        let acts = drain(&mut a);
        assert!(acts.contains(&Action::Stash {
            site: s("blog"),
            from: n("b")
        }));
        a.handle(
            Time(4),
            Event::Done(s("blog"), Outcome::Stashed(Ok(vec![head(5)]))),
        );
        assert_eq!(
            a.copy(&s("blog")),
            Some((Role::Replica, Epoch(2), Some(head(5))))
        );
    }

    #[test]
    fn a_tombstone_destroys_copies_and_spreads() {
        let mut b = started("b", vec![blog_copy(Role::Replica, 1, vec![head(5)], 3)]);
        let mut v = master_view(true);
        v.members
            .get_mut(&n("c"))
            .expect("c")
            .keys
            .push(SiteKey::Deleted(s("blog"), 7));
        b.handle(Time(1), Event::View(v));
        let acts = drain(&mut b);
        assert!(acts.contains(&Action::Destroy { site: s("blog") }));
        assert_eq!(
            b.published().get("deleted:blog").map(String::as_str),
            Some("7")
        );
        b.handle(Time(2), Event::Done(s("blog"), Outcome::Destroyed(Ok(()))));
        assert!(b.copy(&s("blog")).is_none());
        assert!(!b.published().contains_key("site:blog"));
    }
}
