//! Taking events in: [`Node::handle`], and the outcomes of the actions
//! the driver ran.

use super::state::{Copy, Node, TakeOver};
use super::types::{Action, Event, LocalCopy, NodeConfig, Outcome, PullError, View};
use crate::election::{Epoch, Role};
use crate::ids::{NodeName, SiteName};
use crate::site::{self, SiteSpec};
use crate::time::Time;

impl Node {
    /// Takes one event in at `now` (never earlier than the last), then
    /// plans what it changed and publishes a beat when one is due.
    pub fn handle(&mut self, now: Time, event: Event) {
        assert!(
            now >= self.now,
            "time went backwards: {now:?} < {:?}",
            self.now
        );
        self.now = now;
        match event {
            Event::Start(copies) => self.start(copies),
            Event::View(v) => self.see_view(v),
            Event::Tick => {}
            Event::Written(site) => {
                if let Some(c) = self.copies.get_mut(&site) {
                    c.dirty = true;
                }
                self.dirty.insert(site);
            }
            Event::Create(spec) => {
                if !self.create(spec) {
                    return;
                }
            }
            Event::Delete(site) => self.delete(site),
            Event::Done(site, outcome) => {
                self.dirty.insert(site.clone());
                self.done(site, outcome);
            }
            Event::Flush(site) => {
                if let Some(c) = self.copies.get_mut(&site)
                    && c.role == Role::Master
                {
                    c.dirty = true;
                    c.flush = true;
                }
                self.dirty.insert(site);
            }
            Event::Pin(site) => {
                // A migration waits for this copy now: a backoff left by
                // earlier failed pulls (a restart, a transfer cut short)
                // does not hold up its first pull.
                if let Some(c) = self.copies.get_mut(&site) {
                    c.retry_at = c.retry_at.min(now);
                }
                self.dirty.insert(site.clone());
                self.pinned.insert(site);
            }
            Event::Unpin(site) => {
                self.dirty.insert(site.clone());
                self.pinned.remove(&site);
            }
            Event::TakeOver {
                site,
                from,
                epoch,
                head,
                until,
            } => self.take_over(
                site,
                TakeOver {
                    from,
                    epoch,
                    head,
                    until,
                },
            ),
        }
        if self.started {
            self.plan();
            let beats = !self.cfg.beat_interval.is_zero();
            if beats && (self.beats.urgent || now >= self.beats.next_at) {
                self.publish_beat();
            }
        }
    }

    /// `Event::Start`: the votes kept from the last run are published
    /// again, and the local copies taken in.
    fn start(&mut self, copies: Vec<LocalCopy>) {
        let now = self.now;
        assert!(!self.started, "Start is sent once");
        self.started = true;
        self.started_at = now;
        for (site, v) in &self.votes {
            let (key, value) = (site::vote_key(site), site::encode_vote(v));
            self.published.insert(key.clone(), value.clone());
            self.actions.push_back(Action::Publish { key, value });
        }
        for c in copies {
            // A writable copy that is not master any more (killed
            // between stepping down and the `Demote`) is made
            // read-only, its changes snapshotted, first.
            let demote = c.changed && c.role != Role::Master;
            let mut copy = Copy::new(c.role, c.epoch, c.chain, c.spec, now);
            copy.dirty = c.changed;
            copy.demote_pending = demote;
            self.copies.insert(c.site, copy);
        }
    }

    /// `Event::View`: when members went or came, the live set's change
    /// time and each member's time alive; the peers' beats; the index.
    fn see_view(&mut self, v: View) {
        let now = self.now;
        let alive = |v: &View| -> Vec<NodeName> {
            v.members
                .iter()
                .filter(|(_, m)| m.alive && !m.left)
                .map(|(n, _)| n.clone())
                .collect()
        };
        let live = alive(&v);
        if live != alive(&self.view) {
            self.membership_changed = now;
            self.alive_since.retain(|n, _| live.contains(n));
            for n in live {
                self.alive_since.entry(n).or_insert(now);
            }
        }
        let me = self.cfg.name.clone();
        self.beats.read(
            now,
            v.members
                .iter()
                .filter(|(n, _)| **n != me)
                .filter_map(|(n, m)| Some((n, m.beat.as_ref()?))),
        );
        self.reindex(&v);
        self.view = v;
    }

    /// `Event::Create`: this node's first copy of a new site, as its
    /// master at epoch 1. False (nothing to plan) when a copy exists.
    fn create(&mut self, spec: SiteSpec) -> bool {
        let site = spec.name.clone();
        if self.copies.contains_key(&site) {
            return false;
        }
        let mut copy = Copy::new(
            Role::Master,
            Epoch(1),
            Vec::new(),
            Some(spec.clone()),
            self.now,
        );
        copy.busy = true;
        self.copies.insert(site.clone(), copy);
        self.dirty.insert(site.clone());
        self.actions.push_back(Action::Create { site, spec });
        true
    }

    /// `Event::Delete`: a tombstone for the site's incarnation (the local
    /// copy's, or the view's).
    fn delete(&mut self, site: SiteName) {
        let id = self
            .copies
            .get(&site)
            .and_then(|c| c.spec.as_ref().map(|s| s.id))
            .or_else(|| self.site_view(&site).spec.map(|s| s.id));
        if let Some(id) = id {
            self.tombstones.insert(site.clone(), id);
        }
        self.dirty.insert(site);
    }

    /// `Event::TakeOver`: a replica's hand-over, from an older master.
    fn take_over(&mut self, site: SiteName, t: TakeOver) {
        let now = self.now;
        if let Some(c) = self.copies.get_mut(&site)
            && c.role == Role::Replica
            && t.epoch > c.epoch
        {
            c.takeover = Some(t);
            // The old master is paused until this copy holds its
            // final snapshot: pull it now, not after a backoff of
            // up to `retry_max` left by earlier failures, and
            // retry from the shortest delay.
            c.failures = 0;
            c.retry_at = c.retry_at.min(now);
        }
        self.dirty.insert(site);
    }

    /// `Event::Done`: what the action the driver ran on the copy did.
    pub(super) fn done(&mut self, site: SiteName, outcome: Outcome) {
        let now = self.now;
        let Some(c) = self.copies.get_mut(&site) else {
            return;
        };
        c.busy = false;
        match outcome {
            Outcome::Created(Ok(head)) | Outcome::Snapshot(Ok(head)) => {
                // `dirty` was cleared when the snapshot was asked for; a
                // write since then set it again and gets the next one.
                c.chain.push(head);
                c.last_snapshot = now;
                if c.chain.len() == 1 {
                    self.actions.push_back(Action::Persist {
                        site: site.clone(),
                        role: c.role,
                        epoch: c.epoch,
                    });
                }
            }
            Outcome::Created(Err(_)) => {
                // Nothing was left behind by the driver: forget the copy.
                self.copies.remove(&site);
            }
            Outcome::Snapshot(Err(_)) => {
                // Still dirty; the next interval tries again.
                c.dirty = true;
                c.last_snapshot = now;
            }
            Outcome::Pulled(Ok(chain)) => {
                let first = c.chain.is_empty();
                c.chain = chain;
                c.failures = 0;
                if first {
                    self.actions.push_back(Action::Persist {
                        site: site.clone(),
                        role: c.role,
                        epoch: c.epoch,
                    });
                }
            }
            Outcome::Pulled(Err(PullError::Diverged)) => {
                c.role = Role::Diverged;
            }
            Outcome::Pulled(Err(PullError::Failed(_))) | Outcome::Stashed(Err(_)) => {
                fail(c, now, &self.cfg);
            }
            Outcome::Stashed(Ok(chain)) => {
                c.chain = chain;
                c.role = Role::Replica;
                c.failures = 0;
            }
            Outcome::Switched(Ok(())) | Outcome::Demoted(Ok(None)) => {}
            Outcome::Demoted(Ok(Some(head))) => {
                // What the master wrote after its last snapshot is a
                // snapshot now, published as this copy's head: if the
                // master that replaced it lacks it, the pull that follows
                // finds the divergence and stashes it.
                c.chain.push(head);
                c.dirty = false;
            }
            Outcome::Switched(Err(_)) | Outcome::Demoted(Err(_)) => {
                // A failed demotion or promotion is tried again, for the
                // role the copy has now.
                match c.role {
                    Role::Replica => c.demote_pending = true,
                    Role::Master => c.promote_pending = true,
                    Role::Diverged => {}
                }
                fail(c, now, &self.cfg);
            }
            Outcome::Destroyed(Ok(())) => {
                self.copies.remove(&site);
            }
            Outcome::Destroyed(Err(_)) => {
                fail(c, now, &self.cfg);
            }
        }
    }
}

/// One more failure in a row: the next try waits `retry_min`, doubled for
/// each failure before, at most `retry_max`.
fn fail(c: &mut Copy, now: Time, cfg: &NodeConfig) {
    c.failures += 1;
    let factor = 1u32 << c.failures.min(16);
    c.retry_at = now.plus(cfg.retry_min.saturating_mul(factor).min(cfg.retry_max));
}

#[cfg(test)]
mod tests {
    use crate::node::testing::*;
    use crate::node::*;

    use crate::election::{Epoch, Role};

    use crate::site::{self, CopyKey, SiteKey};

    #[test]
    fn create_snapshots_and_publishes_as_master() {
        let mut a = started("a", vec![]);
        a.handle(Time(1), Event::Create(spec("blog", 3)));
        assert_eq!(
            drain(&mut a),
            vec![Action::Create {
                site: s("blog"),
                spec: spec("blog", 3)
            }]
        );
        a.handle(
            Time(2),
            Event::Done(s("blog"), Outcome::Created(Ok(head(1)))),
        );
        let acts = drain(&mut a);
        assert!(acts.contains(&Action::Persist {
            site: s("blog"),
            role: Role::Master,
            epoch: Epoch(1)
        }));
        assert!(
            acts.iter()
                .any(|x| matches!(x, Action::Publish { key, .. } if key == "spec:blog"))
        );
        assert_eq!(
            a.published().get("site:blog").map(String::as_str),
            Some(site::encode_copy(&copy_key(Role::Master, 1, 1)).as_str())
        );
        // Written: a snapshot after the interval, not before.
        a.handle(Time(3), Event::Written(s("blog")));
        assert!(drain(&mut a).is_empty());
        assert_eq!(a.poll_timeout(), Some(Time(1002)));
        a.handle(Time(1002), Event::Tick);
        assert_eq!(
            drain(&mut a),
            vec![Action::Snapshot {
                site: s("blog"),
                seq: 2
            }]
        );
        // Unchanged: no snapshot.
        a.handle(
            Time(1003),
            Event::Done(s("blog"), Outcome::Snapshot(Ok(head(2)))),
        );
        drain(&mut a);
        a.handle(Time(5000), Event::Tick);
        assert!(drain(&mut a).is_empty());
    }

    #[test]
    fn a_killed_masters_writes_after_its_last_snapshot_are_snapshotted_when_it_steps_down_then_stashed()
     {
        // Found by a failover test: a master killed with writes it had
        // acknowledged after its last snapshot came back as a replica; the
        // model knew nothing of them, and as long as the new master took no
        // new snapshot nothing asked for a pull, so they stayed in the
        // replica's live dataset, on no master and in no stash.
        let mut master = blog_copy(Role::Master, 1, vec![head(5)], 3);
        master.changed = true;
        let mut a = Node::new(quiet(n("a")));
        a.remember([n("a"), n("b"), n("c")]);
        a.handle(Time(0), Event::Start(vec![master]));
        let acts = drain(&mut a);
        // It steps down (no quorum yet) with a snapshot of its changes.
        assert!(
            acts.contains(&Action::Demote {
                site: s("blog"),
                seq: 6
            }),
            "{acts:?}"
        );
        a.handle(
            Time(10),
            Event::Done(s("blog"), Outcome::Demoted(Ok(Some(head(6))))),
        );
        assert_eq!(
            a.copy(&s("blog")),
            Some((Role::Replica, Epoch(1), Some(head(6))))
        );
        // ... and publishes it as its head.
        let want = site::encode_copy(&CopyKey {
            role: Role::Replica,
            epoch: Epoch(1),
            seq: 6,
            guid: head(6).guid,
            spec_id: spec("blog", 3).id,
        });
        assert!(drain(&mut a).contains(&Action::Publish {
            key: site::site_key(&s("blog")),
            value: want
        }));
        // b took over at epoch 2 from snapshot 5 and took no snapshot since:
        // a's head differs from b's, so a pulls, finds it diverged and
        // stashes its snapshot 6, which holds those writes.
        let mut v = View::default();
        v.members.insert(
            n("b"),
            member(
                true,
                vec![
                    SiteKey::Copy(s("blog"), copy_key(Role::Master, 2, 5)),
                    SiteKey::Spec(s("blog"), spec("blog", 3)),
                ],
            ),
        );
        v.members.insert(n("a"), member(true, vec![]));
        v.members.insert(n("c"), member(true, vec![]));
        a.handle(Time(20), Event::View(v));
        let acts = drain(&mut a);
        assert!(
            acts.contains(&Action::Pull {
                site: s("blog"),
                from: n("b")
            }),
            "{acts:?}"
        );
        a.handle(
            Time(30),
            Event::Done(s("blog"), Outcome::Pulled(Err(PullError::Diverged))),
        );
        let acts = drain(&mut a);
        assert!(
            acts.contains(&Action::Stash {
                site: s("blog"),
                from: n("b")
            }),
            "{acts:?}"
        );
        // A writable copy persisted as a replica (killed between stepping
        // down and making it read-only) is demoted, with its snapshot, first.
        let mut replica = blog_copy(Role::Replica, 1, vec![head(5)], 3);
        replica.changed = true;
        let mut r = Node::new(quiet(n("r")));
        r.handle(Time(0), Event::Start(vec![replica]));
        assert!(drain(&mut r).contains(&Action::Demote {
            site: s("blog"),
            seq: 6
        }));
    }
}
