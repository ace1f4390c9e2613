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

#[cfg(test)]
mod tests {
    use crate::node::testing::*;
    use crate::node::*;
    use std::time::Duration;

    use crate::election::{Epoch, Role};

    use crate::lease::{self};

    use crate::site::{self, SiteKey, Vote};

    #[test]
    fn a_restarted_master_that_remembers_the_cluster_does_not_keep_its_claim_alone() {
        // Found by the 50-round fault test: a master killed and restarted
        // saw only itself (1 of 1 known members is a majority) and served
        // its copy for ~0.7 s before hearing of the new master.
        let master = || blog_copy(Role::Master, 1, vec![head(5)], 3);
        let mut a = Node::new(quiet(n("a")));
        a.remember([n("a"), n("b"), n("c")]);
        a.handle(Time(0), Event::Start(vec![master()]));
        let acts = drain(&mut a);
        assert_eq!(a.copy(&s("blog")).map(|c| c.0), Some(Role::Replica));
        assert!(demotes(&acts, "blog"), "{acts:?}");
        assert!(!acts.iter().any(|x| matches!(x, Action::Promote { .. })));
        assert_eq!(
            a.known_members(),
            [n("a"), n("b"), n("c")].into_iter().collect()
        );
        // Alone in a cluster of one it keeps its claim, as before.
        let mut solo = Node::new(quiet(n("a")));
        solo.remember([n("a")]);
        solo.handle(Time(0), Event::Start(vec![master()]));
        drain(&mut solo);
        assert_eq!(solo.copy(&s("blog")).map(|c| c.0), Some(Role::Master));
        // The remembered members stop counting after `remember_for`: a
        // member gossip forgot is not known forever.
        let mut cfg = quiet(n("a"));
        cfg.remember_for = Duration::from_secs(60);
        let mut late = Node::new(cfg);
        late.remember([n("a"), n("b"), n("c")]);
        late.handle(Time(0), Event::Start(vec![]));
        assert_eq!(late.known_members().len(), 3);
        late.handle(Time(61_000), Event::Tick);
        assert_eq!(late.known_members(), [n("a")].into_iter().collect());
        // The public quorum (the proxy's fence) counts them too, unless
        // the view says they left.
        let mut v = View::default();
        v.members.insert(n("a"), member(true, vec![]));
        let remembered = [n("a"), n("b"), n("c")].into_iter().collect();
        assert!(!quorum_of(&v, &n("a"), true, &remembered).allows_promotion());
        v.members.insert(n("b"), member(true, vec![]));
        assert!(quorum_of(&v, &n("a"), true, &remembered).allows_promotion());
        let mut left = member(false, vec![]);
        left.left = true;
        v.members.insert(n("b"), left.clone());
        v.members.insert(n("c"), left);
        assert!(quorum_of(&v, &n("a"), true, &remembered).allows_promotion());
    }

    #[test]
    fn a_candidate_promotes_only_with_a_majority_of_votes_it_can_read() {
        // Found by the simulator (seeds 150 and 175 of the site sweep): a
        // node that could hear the others' heartbeats but not their keys (a
        // one-way partition) saw every holder alive and no newer claim,
        // elected itself at the epoch the rest had just given to another
        // node, and acknowledged writes there: two masters at one epoch.
        let mut b = started("b", vec![blog_copy(Role::Replica, 1, vec![head(5)], 3)]);
        let mut v = master_view(false);
        b.handle(Time(1), Event::View(v.clone()));
        assert!(drain(&mut b).is_empty(), "no vote within the start's grace");
        b.handle(Time(20_000), Event::Tick);
        let acts = drain(&mut b);
        // b votes for itself (kept on disk first, then published) ...
        let vote = Vote {
            epoch: Epoch(2),
            candidate: n("b"),
        };
        let persist = acts.iter().position(|x| {
            *x == Action::PersistVote {
                site: s("blog"),
                vote: vote.clone(),
            }
        });
        let publish = acts.iter().position(|x| {
            *x == Action::Publish {
                key: site::vote_key(&s("blog")),
                value: site::encode_vote(&vote),
            }
        });
        assert!(persist.is_some() && persist < publish, "{acts:?}");
        // ... but one vote of three is no majority: no promotion, however
        // long it waits, while c's vote does not arrive.
        assert!(!acts.iter().any(|x| matches!(x, Action::Promote { .. })));
        assert_eq!(b.copy(&s("blog")).map(|c| c.0), Some(Role::Replica));
        // c's vote for another candidate at epoch 2 spends that epoch: b
        // runs at 3, and does not vote again at 2.
        add_vote(&mut v, "c", 2, "a");
        b.handle(Time(21_000), Event::View(v.clone()));
        let acts = drain(&mut b);
        assert!(
            acts.contains(&Action::PersistVote {
                site: s("blog"),
                vote: Vote {
                    epoch: Epoch(3),
                    candidate: n("b")
                }
            }),
            "{acts:?}"
        );
        assert!(!acts.iter().any(|x| matches!(x, Action::Promote { .. })));
        // c votes for b at 3: two of three, b promotes at 3.
        v.members.get_mut(&n("c")).expect("c").keys.pop();
        add_vote(&mut v, "c", 3, "b");
        b.handle(Time(22_000), Event::View(v));
        assert!(drain(&mut b).contains(&Action::Promote {
            site: s("blog"),
            epoch: Epoch(3)
        }));
        // A vote survives a restart: restored, published again, and never
        // cast at a lower epoch.
        let mut again = Node::new(quiet(n("b")));
        again.restore_votes([(s("blog"), vote.clone())]);
        again.handle(Time(0), Event::Start(vec![]));
        assert!(drain(&mut again).contains(&Action::Publish {
            key: site::vote_key(&s("blog")),
            value: site::encode_vote(&vote),
        }));
        assert_eq!(again.vote(&s("blog")), Some(&vote));
    }

    #[test]
    fn the_freshest_replica_promotes_when_the_master_dies_with_quorum() {
        let local = |seq| blog_copy(Role::Replica, 1, vec![head(seq)], 3);
        let mut b = started("b", vec![local(5)]);
        let mut v = master_view(false);
        v.members.get_mut(&n("c")).expect("c").keys =
            vec![SiteKey::Copy(s("blog"), copy_key(Role::Replica, 1, 4))];
        add_vote(&mut v, "c", 2, "b");
        // After the election grace that follows a start (5 s), once the
        // live set has been still for the settle time (1.3 s after 1 ms).
        b.handle(Time(1), Event::View(v.clone()));
        assert!(drain(&mut b).is_empty());
        assert_eq!(b.poll_timeout(), Some(Time(5000)));
        b.handle(Time(4999), Event::Tick);
        assert!(!promotes(&drain(&mut b), "blog"), "not within the grace");
        b.handle(Time(5000), Event::Tick);
        let acts = drain(&mut b);
        assert!(
            acts.contains(&Action::Promote {
                site: s("blog"),
                epoch: Epoch(2)
            }),
            "{acts:?}"
        );
        // Without quorum (only b alive of a, b, c), nothing is promoted.
        let mut lonely = started("b", vec![local(5)]);
        v.members.get_mut(&n("c")).expect("c").alive = false;
        lonely.handle(Time(5000), Event::View(v));
        assert!(
            !drain(&mut lonely)
                .iter()
                .any(|x| matches!(x, Action::Promote { .. }))
        );
    }

    #[test]
    fn a_master_acknowledges_only_while_a_majority_echoes_its_beats() {
        // a, master at epoch 1 of a, b, c: a majority is a and one peer.
        let mut a = beating("a", vec![blog_copy(Role::Master, 1, vec![head(5)], 3)]);
        let mut v = master_view(true);
        a.handle(Time(100), Event::View(v.clone()));
        drain(&mut a);
        assert_eq!(a.lease_until(&s("blog")), Some(Time(0)), "no echo yet");
        // Beats 0 (at 0 ms) and 1 (at 200 ms) went out.
        a.handle(Time(200), Event::Tick);
        assert!(
            drain(&mut a)
                .iter()
                .any(|x| matches!(x, Action::Publish { key, .. } if key == "beat"))
        );
        // b echoes beat 1: the lease runs to 200 ms + 2 s.
        v.members.get_mut(&n("b")).expect("b").beat = Some(beat_of(3, 9, &[("a", 7, 1)]));
        a.handle(Time(300), Event::View(v.clone()));
        drain(&mut a);
        assert_eq!(a.lease_until(&s("blog")), Some(Time(2200)));
        // An echo of another start of a counts for nothing.
        v.members.get_mut(&n("c")).expect("c").beat = Some(beat_of(4, 9, &[("a", 6, 1)]));
        a.handle(Time(300), Event::View(v.clone()));
        assert_eq!(a.lease_until(&s("blog")), Some(Time(2200)));
        // b voted for c above a's epoch: its echo no longer counts.
        add_vote(&mut v, "b", 2, "c");
        a.handle(Time(400), Event::View(v.clone()));
        drain(&mut a);
        assert_eq!(a.lease_until(&s("blog")), Some(Time(0)));
        // A replica holds no lease; with the guard off a master needs none.
        assert_eq!(a.lease_until(&s("other")), None);
        let mut cfg = NodeConfig::new(n("a"));
        cfg.quorum_guard = false;
        let solo = started_with(cfg, vec![blog_copy(Role::Master, 1, vec![head(5)], 3)]);
        assert_eq!(solo.lease_until(&s("blog")), Some(Time::NEVER));
    }

    #[test]
    fn a_voter_waits_out_the_lease_of_the_master_it_last_heard() {
        // c votes for b against a, the master of epoch 1, whose last beat
        // c read at 8 s: not before 8 s + lease + drift.
        let mut c = beating("c", vec![blog_copy(Role::Replica, 1, vec![head(4)], 3)]);
        let mut v = master_view(true);
        v.members.get_mut(&n("a")).expect("a").beat = Some(beat_of(1, 40, &[]));
        v.members.get_mut(&n("b")).expect("b").keys =
            vec![SiteKey::Copy(s("blog"), copy_key(Role::Replica, 1, 5))];
        c.handle(Time(8000), Event::View(v.clone()));
        drain(&mut c);
        // a dies (its beats stop): b is elected at epoch 2.
        v.members.get_mut(&n("a")).expect("a").alive = false;
        c.handle(Time(9000), Event::View(v.clone()));
        drain(&mut c);
        let votes = |acts: &[Action]| {
            acts.iter()
                .filter(|x| matches!(x, Action::PersistVote { .. }))
                .count()
        };
        c.handle(Time(10_300), Event::Tick);
        assert_eq!(
            votes(&drain(&mut c)),
            0,
            "the settle time is over, a's lease is not"
        );
        let mut t = Time(10_300);
        let mut voted = None;
        while t < Time(12_000) {
            t = c.poll_timeout().expect("c looks again");
            c.handle(t, Event::Tick);
            if votes(&drain(&mut c)) > 0 {
                voted = Some(t);
                break;
            }
        }
        assert_eq!(voted, Some(Time(10_500)), "8 s + 2 s + 0.5 s");
        assert_eq!(
            c.vote(&s("blog")).map(|v| v.candidate.clone()),
            Some(n("b"))
        );
    }

    #[test]
    fn a_voter_mutes_a_master_it_still_hears_and_votes_a_wait_after() {
        // a still beats (c hears it through its keys) but its failure
        // detector says dead (a flap): c stops echoing a, and votes
        // lease + drift after the first beat without it.
        let mut c = beating("c", vec![blog_copy(Role::Replica, 1, vec![head(4)], 3)]);
        let mut v = master_view(false);
        v.members.get_mut(&n("b")).expect("b").keys =
            vec![SiteKey::Copy(s("blog"), copy_key(Role::Replica, 1, 5))];
        let mut k = 0;
        let mut t = Time(6000);
        let mut muted_at = None;
        let mut voted = None;
        while t < Time(12_000) && voted.is_none() {
            k += 1;
            v.members.get_mut(&n("a")).expect("a").beat = Some(beat_of(1, k, &[]));
            c.handle(t, Event::View(v.clone()));
            for x in drain(&mut c) {
                match x {
                    Action::Publish { key, value } if key == "beat" => {
                        let b = lease::parse_beat(&value).expect("a beat");
                        if muted_at.is_none() && !b.echoes.contains_key(&n("a")) {
                            muted_at = Some(t);
                        }
                    }
                    Action::PersistVote { .. } => voted = Some(t),
                    _ => {}
                }
            }
            t = t.plus(Duration::from_millis(100));
        }
        let muted_at = muted_at.expect("c stopped echoing a");
        let voted = voted.expect("c voted in the end");
        assert_eq!(voted, muted_at.plus(Duration::from_millis(2500)));
    }

    #[test]
    fn a_master_steps_down_when_the_votes_against_it_leave_no_majority_to_echo_it() {
        let mut a = beating("a", vec![blog_copy(Role::Master, 1, vec![head(5)], 3)]);
        let mut v = master_view(true);
        add_vote(&mut v, "b", 2, "c");
        a.handle(Time(100), Event::View(v.clone()));
        assert!(
            !demotes(&drain(&mut a), "blog"),
            "one vote against: a and c remain"
        );
        add_vote(&mut v, "c", 2, "c");
        a.handle(Time(200), Event::View(v.clone()));
        assert!(demotes(&drain(&mut a), "blog"), "b and c voted against a");
        // A hand-over is left alone: a's own vote is above its epoch.
        let mut h = beating("a", vec![blog_copy(Role::Master, 1, vec![head(5)], 3)]);
        h.handle(Time(100), Event::View(master_view(true)));
        drain(&mut h);
        h.hand_over(&s("blog"), &n("c")).expect("a hands over to c");
        h.handle(Time(200), Event::View(v));
        assert!(!demotes(&drain(&mut h), "blog"));
    }

    #[test]
    fn a_fenced_master_with_a_snapshot_in_flight_stops_counting_as_master_at_once() {
        let mut a = started("a", vec![blog_copy(Role::Master, 1, vec![head(5)], 3)]);
        a.handle(Time(1), Event::Written(s("blog")));
        a.handle(Time(2000), Event::Tick);
        assert!(
            drain(&mut a)
                .iter()
                .any(|x| matches!(x, Action::Snapshot { .. }))
        );
        // While the snapshot runs, a claim with a higher epoch arrives.
        let mut v = master_view(true);
        v.members.get_mut(&n("a")).expect("a").keys.clear();
        v.members.get_mut(&n("b")).expect("b").keys = vec![
            SiteKey::Copy(s("blog"), copy_key(Role::Master, 2, 5)),
            SiteKey::Spec(s("blog"), spec("blog", 3)),
        ];
        a.handle(Time(2001), Event::View(v));
        assert_eq!(a.copy(&s("blog")).map(|c| c.0), Some(Role::Replica));
        let published = a.published().get("site:blog").cloned().unwrap_or_default();
        assert!(published.contains("\"role\":\"replica\""), "{published}");
        assert!(!demotes(&drain(&mut a), "blog"));
        // The snapshot ends: the demotion follows.
        a.handle(
            Time(2002),
            Event::Done(s("blog"), Outcome::Snapshot(Ok(head(6)))),
        );
        assert!(demotes(&drain(&mut a), "blog"));
    }

    #[test]
    fn a_master_that_loses_the_majority_steps_down_and_is_elected_again_later() {
        // Found by the simulator (seed 11 of the site sweep): a master cut
        // off in a minority kept acknowledging writes while the majority
        // promoted another copy; its replicas pulled them after the heal,
        // then they were stashed, off the history that won.
        let mut a = started("a", vec![blog_copy(Role::Master, 1, vec![head(5)], 3)]);
        let mut v = master_view(true);
        a.handle(Time(6000), Event::View(v.clone()));
        assert!(drain(&mut a).is_empty());
        // b and c vanish: a sees 1 of 3 alive.
        v.members.get_mut(&n("b")).expect("b").alive = false;
        v.members.get_mut(&n("c")).expect("c").alive = false;
        a.handle(Time(7000), Event::View(v.clone()));
        let acts = drain(&mut a);
        assert!(demotes(&acts, "blog"), "{acts:?}");
        assert!(acts.contains(&Action::Persist {
            site: s("blog"),
            role: Role::Replica,
            epoch: Epoch(1)
        }));
        assert_eq!(a.copy(&s("blog")).map(|c| c.0), Some(Role::Replica));
        a.handle(
            Time(7001),
            Event::Done(s("blog"), Outcome::Switched(Ok(()))),
        );
        drain(&mut a);
        // Without quorum, no election either, however long it waits.
        a.handle(Time(20_000), Event::Tick);
        assert!(drain(&mut a).is_empty());
        // The majority is back and no one else claimed the site: a, with
        // the newest copy, is elected again once membership settled.
        v.members.get_mut(&n("b")).expect("b").alive = true;
        v.members.get_mut(&n("a")).expect("a").keys =
            vec![SiteKey::Copy(s("blog"), copy_key(Role::Replica, 1, 5))];
        // b votes for a at epoch 2 (as its own election names a).
        add_vote(&mut v, "b", 2, "a");
        a.handle(Time(21_000), Event::View(v));
        assert!(
            !promotes(&drain(&mut a), "blog"),
            "not before the settle time"
        );
        // Settled at 21 s + the settle time.
        let settled = Time(21_000).plus(quiet(n("a")).election_settle);
        assert_eq!(a.poll_timeout(), Some(settled));
        a.handle(settled, Event::Tick);
        assert!(drain(&mut a).contains(&Action::Promote {
            site: s("blog"),
            epoch: Epoch(2)
        }));

        // With the guard off, a master without a majority keeps serving.
        let mut cfg = quiet(n("a"));
        cfg.quorum_guard = false;
        let mut free = Node::new(cfg);
        free.handle(
            Time(0),
            Event::Start(vec![blog_copy(Role::Master, 1, vec![head(5)], 3)]),
        );
        drain(&mut free);
        let mut lonely = master_view(true);
        lonely.members.get_mut(&n("b")).expect("b").alive = false;
        lonely.members.get_mut(&n("c")).expect("c").alive = false;
        free.handle(Time(7000), Event::View(lonely));
        assert!(
            !drain(&mut free)
                .iter()
                .any(|x| matches!(x, Action::Demote { .. }))
        );
        assert_eq!(free.copy(&s("blog")).map(|c| c.0), Some(Role::Master));
    }

    #[test]
    fn a_restarted_node_that_sees_only_itself_does_not_promote() {
        // Found by the simulator: n1 restarted, its first gossip view held
        // only itself (1 of 1 alive: "quorum"), and it promoted its stale
        // replica at once, beside the live master.
        let mut b = started("b", vec![blog_copy(Role::Replica, 1, vec![head(1)], 3)]);
        let mut alone = View::default();
        alone.members.insert(
            n("b"),
            member(
                true,
                vec![SiteKey::Copy(s("blog"), copy_key(Role::Replica, 1, 1))],
            ),
        );
        b.handle(Time(100), Event::View(alone.clone()));
        assert!(
            !drain(&mut b)
                .iter()
                .any(|x| matches!(x, Action::Promote { .. })),
            "promoted during the election grace"
        );
        // The grace ends with a tick; a node still alone after it and
        // holding the only copy may promote (it is its whole cluster).
        let end = b.poll_timeout().expect("a tick at the end of the grace");
        assert_eq!(end, Time(5000));
        b.handle(end, Event::Tick);
        assert!(
            drain(&mut b)
                .iter()
                .any(|x| matches!(x, Action::Promote { .. }))
        );
    }

    #[test]
    fn no_promotion_while_membership_moves_and_step_down_takes_the_fencing_epoch() {
        let local = |role, epoch, seq| LocalCopy {
            site: s("blog"),
            role,
            epoch: Epoch(epoch),
            chain: vec![head(seq)],
            spec: Some(spec("blog", 3)),
            changed: false,
        };
        // The master just died in b's view: no promotion until the live
        // set has been still for `election_settle`.
        let mut b = started("b", vec![local(Role::Replica, 1, 5)]);
        let mut v = master_view(true);
        b.handle(Time(1), Event::View(v.clone()));
        drain(&mut b);
        v.members.get_mut(&n("a")).expect("a").alive = false;
        add_vote(&mut v, "c", 2, "b");
        b.handle(Time(12_000), Event::View(v.clone()));
        assert!(
            !drain(&mut b)
                .iter()
                .any(|x| matches!(x, Action::Promote { .. }))
        );
        let settled = Time(12_000).plus(quiet(n("b")).election_settle);
        assert_eq!(b.poll_timeout(), Some(settled));
        b.handle(Time(settled.0 - 1), Event::Tick);
        assert!(drain(&mut b).is_empty());
        b.handle(settled, Event::Tick);
        assert!(drain(&mut b).contains(&Action::Promote {
            site: s("blog"),
            epoch: Epoch(2)
        }));

        // A master fenced by a claim at epoch 2 whose node it still sees
        // dead steps down to epoch 2, not to a pending election's 3.
        let mut a = started("a", vec![local(Role::Master, 1, 6)]);
        let mut w = master_view(true);
        w.members.get_mut(&n("a")).expect("a").keys.clear();
        *w.members.get_mut(&n("b")).expect("b") = member(
            false,
            vec![SiteKey::Copy(s("blog"), copy_key(Role::Master, 2, 6))],
        );
        a.handle(Time(6000), Event::View(w));
        assert!(demotes(&drain(&mut a), "blog"));
        assert_eq!(a.copy(&s("blog")).map(|c| c.1), Some(Epoch(2)));
    }
}
