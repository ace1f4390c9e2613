//! Election and claims: this node's votes (kept before published, and
//! never before the leases of earlier masters ran out), the election over
//! a site's view, winning an epoch, and the master's lease (beats and
//! echoes, [`crate::lease`]).

use std::collections::BTreeSet;

use super::state::{Node, SiteView};
use super::types::Action;
use crate::election::{self, Epoch, MasterDecision, Quorum, Role, should_step_down};
use crate::ids::{NodeName, SiteName};
use crate::lease::{self};
use crate::site::{self, Vote};
use crate::time::Time;
use crate::vote;

impl Node {
    /// Publishes this node's next beat: its echoes of the peers' beats, the
    /// muted ones left out.
    pub(super) fn publish_beat(&mut self) {
        let keep = self.cfg.lease.saturating_mul(2);
        let beat = self.beats.beat(self.now, self.cfg.beat_interval, keep);
        let (key, value) = (lease::BEAT_KEY.to_owned(), lease::encode_beat(&beat));
        self.published.insert(key.clone(), value.clone());
        self.actions.push_back(Action::Publish { key, value });
    }

    /// Until when this node's master copy of `site` may acknowledge writes
    /// ([`crate::lease`]): `None` where it is not master, [`Time::NEVER`]
    /// with the quorum guard off or where this node alone is a majority.
    pub fn lease_until(&self, site: &SiteName) -> Option<Time> {
        let c = self.copies.get(site)?;
        if c.role != Role::Master {
            return None;
        }
        if !self.cfg.quorum_guard {
            return Some(Time::NEVER);
        }
        let me = &self.cfg.name;
        let known = self.quorum().known_members;
        let need = known / 2; // peers, besides this node
        if need == 0 {
            return Some(Time::NEVER);
        }
        let sv = self.site_view(site);
        let mut fresh = Vec::new();
        for (p, m) in &self.view.members {
            if p == me || m.left {
                continue;
            }
            let Some(echo) = m.beat.as_ref().and_then(|b| b.echoes.get(me)) else {
                continue;
            };
            let Some(at) = self.beats.sent_at(*echo) else {
                continue;
            };
            let vote = sv.vote_of.get(p);
            if vote.is_some_and(|v| v.epoch > c.epoch && &v.candidate != me) {
                continue;
            }
            let voted_for_me = vote.is_some_and(|v| v.epoch == c.epoch && &v.candidate == me);
            if voted_for_me || echo.counter >= c.office_beat {
                fresh.push(at);
            }
        }
        Some(lease::deadline(fresh, need, self.cfg.lease))
    }

    /// The election over the site's view, with the votes: a candidate runs
    /// for an epoch no other candidate has votes in ([`vote::epoch_to_run`]).
    pub(super) fn decide(&self, site: &SiteName, sv: &SiteView, quorum: Quorum) -> MasterDecision {
        match election::master(site, &sv.holders, quorum) {
            MasterDecision::Elect { node, epoch } if self.cfg.quorum_guard => {
                let votes = sv.votes.iter().chain(self.votes.get(site));
                let epoch = vote::epoch_to_run(epoch, &node, votes);
                MasterDecision::Elect { node, epoch }
            }
            d => d,
        }
    }

    /// The epoch after every one that `site`'s votes (this node's too),
    /// its holders and this node's copy (at `mine`) have reached.
    pub(super) fn next_free_epoch(&self, site: &SiteName, sv: &SiteView, mine: Epoch) -> Epoch {
        sv.votes
            .iter()
            .chain(self.votes.get(site))
            .map(|v| v.epoch)
            .chain(sv.holders.iter().map(|h| h.copy.epoch))
            .max()
            .unwrap_or_default()
            .max(mine)
            .next()
    }

    /// Votes for `candidate` at `epoch` unless this node voted at that
    /// epoch or above already: kept on disk, then published.
    ///
    /// Not before every other node that may hold a lease below `epoch` is
    /// out of it as far as this node's echoes go ([`crate::lease`]): until
    /// then the vote waits (`vote_waits`, the site is planned again then)
    /// and those nodes are muted.
    pub(super) fn cast_vote(&mut self, site: &SiteName, epoch: Epoch, candidate: &NodeName) {
        let last = self.votes.get(site);
        let repeat = last.is_some_and(|v| v.epoch == epoch && &v.candidate == candidate);
        if repeat || !vote::may_vote(last, epoch, candidate) {
            return;
        }
        let ready = self.lease_wait(site, epoch, candidate);
        if ready > self.now {
            self.vote_waits.insert(site.clone(), ready);
            return;
        }
        self.vote_waits.remove(site);
        let vote = Vote {
            epoch,
            candidate: candidate.clone(),
        };
        self.votes.insert(site.clone(), vote.clone());
        self.actions.push_back(Action::PersistVote {
            site: site.clone(),
            vote: vote.clone(),
        });
        let (key, value) = (site::vote_key(site), site::encode_vote(&vote));
        self.published.insert(key.clone(), value.clone());
        self.actions.push_back(Action::Publish { key, value });
    }

    /// When a vote for `candidate` at `epoch` may be cast, as far as the
    /// leases of earlier masters go; mutes each node still waited for.
    pub(super) fn lease_wait(
        &mut self,
        site: &SiteName,
        epoch: Epoch,
        candidate: &NodeName,
    ) -> Time {
        let me = self.cfg.name.clone();
        let sv = self.site_view(site);
        let mut blockers: BTreeSet<NodeName> = sv
            .holders
            .iter()
            .filter(|h| h.copy.role == Role::Master && h.copy.epoch < epoch)
            .map(|h| h.node.clone())
            .collect();
        if let Some(v) = self.votes.get(site)
            && v.epoch < epoch
        {
            blockers.insert(v.candidate.clone());
        }
        blockers.remove(&me);
        blockers.remove(candidate);
        // A master that hands the site over consents: it voted for the
        // candidate at this very epoch, and holds its work meanwhile.
        blockers.retain(|b| {
            sv.vote_of
                .get(b)
                .is_none_or(|v| v.epoch != epoch || &v.candidate != candidate)
        });
        let wait = self.cfg.lease + self.cfg.lease_drift;
        let linger = self.now.plus(wait);
        let mut ready = self.now;
        for b in blockers {
            let t = self.beats.vote_ready(&b, self.started_at, wait);
            if t > self.now {
                self.beats.mute(&b, self.now, linger);
                ready = ready.max(self.beats.vote_ready(&b, self.started_at, wait));
            }
        }
        ready
    }

    /// Whether this node holds a strict majority of `known` members' votes
    /// for itself at `epoch` (always, with the quorum guard off: a minority
    /// may elect then).
    pub(super) fn won(&self, site: &SiteName, sv: &SiteView, epoch: Epoch, known: usize) -> bool {
        !self.cfg.quorum_guard
            || vote::has_majority(
                sv.votes.iter().chain(self.votes.get(site)),
                epoch,
                &self.cfg.name,
                known,
            )
    }

    /// This node's votes in the site's election: for the candidate the
    /// election names (not within the start's grace: a node that just
    /// started sees a part of the cluster, and would spend epochs on
    /// candidates the others do not see), and the standing master's own
    /// vote when it is above its epoch.
    pub(super) fn vote_in_election(
        &mut self,
        site: &SiteName,
        sv: &SiteView,
        decision: &MasterDecision,
    ) {
        let now = self.now;
        if self.cfg.quorum_guard
            && now >= self.started_at.plus(self.cfg.election_grace)
            && let MasterDecision::Elect { node, epoch } = decision
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
            } = decision
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
    }

    /// A master steps down, its role flipping at once even with an action
    /// in flight (the `Demote` that makes the copy read-only follows when
    /// the copy is free), when another claim fences it, when (quorum
    /// guard on) it sees no majority alive, or when it is deposed.
    pub(super) fn step_down_if_fenced(&mut self, site: &SiteName, sv: &SiteView, quorum: Quorum) {
        let me = self.cfg.name.clone();
        let c = self.copies.get(site).expect("a planned copy");
        // A fenced master stops counting as master at once, even with an
        // action in flight (found by the simulator).
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
        if c.role != Role::Master
            || !(no_quorum || deposed || should_step_down(site, &me, &sv.holders))
        {
            return;
        }
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

    /// This node takes office as the site's master at `epoch`: the copy
    /// is promoted, and its role persisted.
    pub(super) fn take_office(&mut self, site: &SiteName, epoch: Epoch) {
        let c = self.copies.get_mut(site).expect("a planned copy");
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
}
