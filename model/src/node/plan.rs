//! Planning: which sites to look at after an event, and, for each, what
//! its copy here does next (promote, demote, snapshot, pull, stash, take
//! a copy, destroy).

use super::state::{Copy, Node};
use super::types::Action;
use crate::election::{MasterDecision, Quorum, Role, should_step_down};
use crate::ids::SiteName;
use crate::placement::placement;
use crate::time::Time;

impl Node {
    /// Plans the sites whose inputs changed, and the local copies whose
    /// time came: a retry or snapshot time, or (for every copy) the opening
    /// of the election window or a member turning warm, since the last
    /// plan. Planning a site again with unchanged inputs and no such time
    /// passed would do nothing: whatever it decided last time either led
    /// to an action (the copy is busy until its `Done`) or still holds.
    pub(super) fn plan(&mut self) {
        let now = self.now;
        let since = self.last_plan.replace(now);
        let came = |t: Time| since.is_none_or(|s| s < t) && t <= now;
        let mut sites = std::mem::take(&mut self.dirty);
        if std::mem::take(&mut self.dirty_all) {
            sites.extend(self.index.keys().cloned());
        }
        let elections = came(self.started_at.plus(self.cfg.election_grace))
            || came(self.membership_changed.plus(self.cfg.election_settle))
            || self
                .alive_since
                .values()
                .any(|t| came(t.plus(self.cfg.election_warmup)));
        for (site, t) in &self.vote_waits {
            if came(*t) {
                sites.insert(site.clone());
            }
        }
        self.vote_waits.retain(|_, t| *t > now);
        for (site, c) in &self.copies {
            if elections
                || came(c.retry_at)
                || (c.dirty && came(c.last_snapshot.plus(self.cfg.snapshot_interval)))
            {
                sites.insert(site.clone());
            }
        }
        // Adopt every tombstone seen, so a deletion outlives its author
        // (the view's, where there is one).
        for site in &sites {
            if let Some(id) = self
                .index
                .get(site)
                .and_then(|e| e.values().filter_map(|k| k.deleted).next_back())
            {
                self.tombstones.insert(site.clone(), id);
            }
        }
        let quorum = self.quorum();
        let promotion = self.promotion_quorum();
        for site in &sites {
            self.plan_site(site, quorum, promotion);
        }
        self.publish(&sites);
    }

    pub(super) fn plan_site(&mut self, site: &SiteName, quorum: Quorum, promotion: Quorum) {
        let sv = self.site_view(site);
        let me = self.cfg.name.clone();
        let now = self.now;
        let decision = self.decide(site, &sv, promotion);
        // No vote within the start's grace either: a node that just
        // started sees a part of the cluster, and would spend epochs on
        // candidates the others do not see.
        if self.cfg.quorum_guard
            && now >= self.started_at.plus(self.cfg.election_grace)
            && let MasterDecision::Elect { node, epoch } = &decision
        {
            self.cast_vote(site, *epoch, node);
        }
        // A live migration: the standing master voted for its successor at
        // a later epoch (`Node::hand_over`); every node follows that vote,
        // so the takeover needs a majority as any promotion does, and a
        // failover candidate cannot win the same epoch. So too its vote
        // for itself when the hand-over failed (`plan_resume`).
        // Not held back by the start's grace: it follows the standing
        // master's own vote, not this node's partial view.
        if self.cfg.quorum_guard
            && let MasterDecision::Keep {
                node: master,
                epoch,
            } = &decision
            && let Some(v) = sv.vote_of.get(master)
            && v.epoch > *epoch
            && sv
                .holders
                .iter()
                .any(|h| h.node == v.candidate && h.alive && h.copy.role != Role::Diverged)
        {
            let v = v.clone();
            self.cast_vote(site, v.epoch, &v.candidate);
        }

        let Some(c) = self.copies.get(site) else {
            // No copy here: take one if placement wants this node and a
            // master serves the site.
            let Some(spec) = sv.spec else { return };
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
                self.copies.insert(
                    site.clone(),
                    Copy {
                        role: Role::Replica,
                        epoch,
                        chain: Vec::new(),
                        spec: Some(spec),
                        busy: true,
                        dirty: false,
                        last_snapshot: now,
                        failures: 0,
                        retry_at: now,
                        demote_pending: false,
                        promote_pending: false,
                        flush: false,
                        takeover: None,
                        office_beat: 0,
                        handing_over: false,
                        resume_at: None,
                    },
                );
                self.actions.push_back(Action::Pull {
                    site: site.clone(),
                    from: master,
                });
            }
            return;
        };
        // A fenced master stops counting as master at once, even with an
        // action in flight (found by the simulator): its role flips now,
        // and the `Demote` that makes the copy read-only follows when the
        // copy is free.
        // A master also stops serving when, with the quorum guard on, it
        // no longer sees a majority alive: the majority may elect another
        // master (after its failure detector and `election_settle`), and
        // writes this side acknowledged meanwhile would be left in a stash
        // (found by the simulator: a minority master kept acknowledging
        // writes through a partition, its replicas pulled them after the
        // heal, and they were lost from the history that won).
        let no_quorum = self.cfg.quorum_guard && !quorum.allows_promotion();
        let deposed = self.cfg.quorum_guard && c.role == Role::Master && {
            // So many members voted above its epoch for another candidate
            // that those left to echo it are no majority: it can never
            // hold a lease again, and those votes began an election that
            // seeing it alive keeps others from finishing. Not while it
            // hands the site over (its own vote is above its epoch).
            let against = sv
                .vote_of
                .values()
                .filter(|v| v.epoch > c.epoch && v.candidate != me)
                .count();
            let handing_over = self.votes.get(site).is_some_and(|v| v.epoch > c.epoch);
            !handing_over
                && 2 * quorum.known_members.saturating_sub(against) <= quorum.known_members
        };
        if c.role == Role::Master
            && (no_quorum || deposed || should_step_down(site, &me, &sv.holders))
        {
            // The epoch of the claim that fenced this one: never a pending
            // election's (fence + 1), which would fence the live claim this
            // node merely cannot see alive yet, and discard its writes
            // (found by the simulator).
            let fence = sv.holders.iter().map(|h| h.copy.epoch).max();
            let epoch = fence.unwrap_or(c.epoch).max(c.epoch);
            let c = self.copies.get_mut(site).expect("checked above");
            c.role = Role::Replica;
            c.epoch = epoch;
            c.demote_pending = true;
            c.promote_pending = false;
            c.handing_over = false;
            c.resume_at = None;
            self.actions.push_back(Action::Persist {
                site: site.clone(),
                role: Role::Replica,
                epoch,
            });
        }
        self.plan_resume(site, &sv, promotion);
        let Some(c) = self.copies.get(site) else {
            return;
        };
        if c.busy || now < c.retry_at {
            return;
        }
        if c.demote_pending {
            let c = self.copies.get_mut(site).expect("checked above");
            c.demote_pending = false;
            c.busy = true;
            let seq = c.head().map_or(1, |h| h.seq + 1);
            self.actions.push_back(Action::Demote {
                site: site.clone(),
                seq,
            });
            return;
        }
        if c.promote_pending && c.role == Role::Master {
            let c = self.copies.get_mut(site).expect("checked above");
            c.promote_pending = false;
            c.busy = true;
            let epoch = c.epoch;
            self.actions.push_back(Action::Promote {
                site: site.clone(),
                epoch,
            });
            return;
        }
        let spec_id = c.spec.as_ref().map(|s| s.id);
        if spec_id.is_some_and(|id| sv.deleted.contains(&id)) {
            let c = self.copies.get_mut(site).expect("checked above");
            c.busy = true;
            self.actions
                .push_back(Action::Destroy { site: site.clone() });
            return;
        }
        let snapshot_due =
            c.dirty && (c.flush || now >= c.last_snapshot.plus(self.cfg.snapshot_interval));
        match c.role {
            Role::Master => {
                if snapshot_due {
                    let seq = c.head().map_or(1, |h| h.seq + 1);
                    let c = self.copies.get_mut(site).expect("checked above");
                    c.busy = true;
                    c.dirty = false;
                    c.flush = false;
                    self.actions.push_back(Action::Snapshot {
                        site: site.clone(),
                        seq,
                    });
                }
            }
            Role::Replica if c.takeover.is_some() => {
                // A migration hands the site over: catch up with the old
                // master's final snapshot, then claim the epoch the old
                // master voted for this node in (the old master is paused,
                // waiting for it) once a majority voted so too.
                let t = c.takeover.clone().expect("checked above");
                let fenced = sv.holders.iter().any(|h| h.copy.epoch >= t.epoch);
                let expired = now > t.until || fenced || c.epoch >= t.epoch;
                if !expired && self.cfg.quorum_guard {
                    self.cast_vote(site, t.epoch, &me);
                }
                let won = self.won(site, &sv, t.epoch, promotion.known_members);
                let c = self.copies.get_mut(site).expect("checked above");
                if expired {
                    c.takeover = None;
                } else if c.chain.contains(&t.head) && !won {
                    // Holds the final snapshot; the votes are on their way
                    // (each arrival re-plans the site).
                } else if c.chain.contains(&t.head) {
                    // It holds the final snapshot (and maybe a later one
                    // of the same master: the old master may snapshot
                    // again after it, a change seen late; a pull brings
                    // the newest).
                    c.takeover = None;
                    c.role = Role::Master;
                    c.epoch = t.epoch;
                    c.office_beat = self.beats.next;
                    c.busy = true;
                    self.actions.push_back(Action::Promote {
                        site: site.clone(),
                        epoch: t.epoch,
                    });
                    self.actions.push_back(Action::Persist {
                        site: site.clone(),
                        role: Role::Master,
                        epoch: t.epoch,
                    });
                } else {
                    c.busy = true;
                    self.actions.push_back(Action::Pull {
                        site: site.clone(),
                        from: t.from,
                    });
                }
            }
            Role::Replica => match decision {
                MasterDecision::Elect { node, epoch }
                    if node == me
                        && now >= self.started_at.plus(self.cfg.election_grace)
                        && now >= self.membership_changed.plus(self.cfg.election_settle)
                        && self.won(site, &sv, epoch, promotion.known_members) =>
                {
                    let c = self.copies.get_mut(site).expect("checked above");
                    c.role = Role::Master;
                    c.epoch = epoch;
                    c.office_beat = self.beats.next;
                    c.busy = true;
                    self.actions.push_back(Action::Promote {
                        site: site.clone(),
                        epoch,
                    });
                    self.actions.push_back(Action::Persist {
                        site: site.clone(),
                        role: Role::Master,
                        epoch,
                    });
                }
                MasterDecision::Keep { node, epoch } if node != me => {
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
                _ => {}
            },
            Role::Diverged => {
                if let MasterDecision::Keep { node, .. } = decision
                    && node != me
                {
                    let c = self.copies.get_mut(site).expect("checked above");
                    c.busy = true;
                    self.actions.push_back(Action::Stash {
                        site: site.clone(),
                        from: node,
                    });
                }
            }
        }
    }
}
