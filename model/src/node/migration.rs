//! Live migration's side of the state machine: the hand-over of a site
//! to its successor, and claiming it again when the hand-over failed.

use super::state::{Node, SiteView};
use super::types::Action;
use crate::election::{Epoch, Quorum, Role};
use crate::ids::{NodeName, SiteName};
use crate::site::Vote;

impl Node {
    /// A live migration's hand-over, on the master: votes for `to` at the
    /// epoch after every epoch this node's copy and the votes it can read
    /// have reached, and returns that epoch, which `to` then claims
    /// (`Event::TakeOver`) once a majority voted for it there. The vote is
    /// kept on disk, then published, as every vote (drain the actions).
    ///
    /// # Errors
    ///
    /// This node is not the site's master, or cannot vote for `to` at that
    /// epoch.
    pub fn hand_over(&mut self, site: &SiteName, to: &NodeName) -> Result<Epoch, String> {
        let Some(c) = self.copies.get(site) else {
            return Err(format!("this node holds no copy of '{site}'"));
        };
        if c.role != Role::Master {
            return Err(format!("this node's copy of '{site}' is not the master"));
        }
        let sv = self.site_view(site);
        let epoch = self.next_free_epoch(site, &sv, c.epoch);
        if self.cfg.quorum_guard {
            self.cast_vote(site, epoch, to);
            if self.votes.get(site).is_none_or(|v| v.epoch != epoch) {
                return Err(format!("could not vote for {to} at epoch {epoch}"));
            }
        }
        let c = self.copies.get_mut(site).expect("checked above");
        c.handing_over = true;
        Ok(epoch)
    }

    /// A live migration's hand-over failed (the target died, timed out):
    /// this master serves on, and claims the site again above the epoch
    /// it voted for the target in (`plan_resume`; drain the actions).
    pub fn abort_hand_over(&mut self, site: &SiteName) {
        if let Some(c) = self.copies.get_mut(site) {
            c.handing_over = false;
        }
        self.dirty.insert(site.clone());
        self.plan();
    }

    /// A master whose hand-over did not complete claims the site again
    /// above the epoch it voted for its successor in: those who followed
    /// that vote echo it no more ([`Node::lease_until`]), and the successor
    /// may have taken office there before it failed. It votes for itself
    /// at the next free epoch; the others follow a standing master's vote
    /// (`plan_site`), each once out of the successor's lease
    /// ([`Node::cast_vote`]); with a majority, its copy's epoch is that one.
    pub(super) fn plan_resume(&mut self, site: &SiteName, sv: &SiteView, promotion: Quorum) {
        let me = self.cfg.name.clone();
        let Some(c) = self.copies.get(site) else {
            return;
        };
        if c.role != Role::Master || !self.cfg.quorum_guard {
            return;
        }
        let Some(mine) = self.votes.get(site).cloned() else {
            return;
        };
        if mine.epoch <= c.epoch {
            return;
        }
        let stale = |at: Epoch| sv.votes.iter().any(|v| v.epoch >= at && v.candidate != me);
        let at = match c.resume_at {
            Some(at) if !stale(at) => at,
            _ if mine.candidate == me && c.resume_at.is_none() => mine.epoch,
            _ if c.handing_over => return,
            _ => self.next_free_epoch(site, sv, c.epoch),
        };
        let c = self.copies.get_mut(site).expect("checked above");
        c.resume_at = Some(at);
        self.cast_vote(site, at, &me);
        if self.votes.get(site)
            != Some(&Vote {
                epoch: at,
                candidate: me,
            })
        {
            return;
        }
        if !self.won(site, sv, at, promotion.known_members) {
            return;
        }
        let c = self.copies.get_mut(site).expect("checked above");
        c.epoch = at;
        c.office_beat = self.beats.next;
        c.resume_at = None;
        self.actions.push_back(Action::Persist {
            site: site.clone(),
            role: Role::Master,
            epoch: at,
        });
    }

    /// A migration hands the site over to this replica: catch up with the
    /// old master's final snapshot, then claim the epoch the old master
    /// voted for this node in (the old master is paused, waiting for it)
    /// once a majority voted so too.
    pub(super) fn plan_takeover(&mut self, site: &SiteName, sv: &SiteView, promotion: Quorum) {
        let me = self.cfg.name.clone();
        let now = self.now;
        let c = self.copies.get(site).expect("a planned copy");
        let t = c.takeover.clone().expect("a takeover under way");
        let fenced = sv.holders.iter().any(|h| h.copy.epoch >= t.epoch);
        let expired = now > t.until || fenced || c.epoch >= t.epoch;
        if !expired && self.cfg.quorum_guard {
            self.cast_vote(site, t.epoch, &me);
        }
        let won = self.won(site, sv, t.epoch, promotion.known_members);
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
            self.take_office(site, t.epoch);
        } else {
            c.busy = true;
            self.actions.push_back(Action::Pull {
                site: site.clone(),
                from: t.from,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::node::testing::*;
    use crate::node::*;

    use crate::election::{Epoch, Role};

    use crate::site::{SiteKey, Vote};

    #[test]
    fn a_master_whose_hand_over_failed_claims_the_site_again_above_its_epoch() {
        // Found by the migration tests: a hands blog over to c at epoch 2,
        // b and c follow, c dies before it takes over. Those votes keep b's
        // echoes from counting for a at epoch 1: without a new claim, a
        // never held a lease again and refused the site's work for good.
        let mut a = beating("a", vec![blog_copy(Role::Master, 1, vec![head(5)], 3)]);
        let mut v = master_view(true);
        a.handle(Time(100), Event::View(v.clone()));
        drain(&mut a);
        assert_eq!(a.hand_over(&s("blog"), &n("c")), Ok(Epoch(2)));
        drain(&mut a);
        add_vote(&mut v, "b", 2, "c");
        add_vote(&mut v, "c", 2, "c");
        v.members.get_mut(&n("b")).expect("b").beat = Some(beat_of(3, 9, &[("a", 7, 0)]));
        a.handle(Time(300), Event::View(v.clone()));
        drain(&mut a);
        assert_eq!(a.lease_until(&s("blog")), Some(Time(0)), "b followed c");
        // c dies; the migration gives up.
        v.members.get_mut(&n("c")).expect("c").alive = false;
        a.handle(Time(900), Event::View(v.clone()));
        a.abort_hand_over(&s("blog"));
        let my_vote = |acts: &[Action]| {
            acts.iter().find_map(|x| match x {
                Action::PersistVote { vote, .. } => Some(vote.clone()),
                _ => None,
            })
        };
        assert_eq!(my_vote(&drain(&mut a)), None, "c's lease may still run");
        let (t, vote) = first_vote(&mut a, Time(5000)).expect("a votes for itself");
        assert_eq!((vote.epoch, vote.candidate), (Epoch(3), n("a")));
        assert_eq!(
            t,
            Time(2500),
            "c was never heard: since a started, 2 s + 0.5 s"
        );
        assert_eq!(
            a.copy(&s("blog")).map(|c| c.1),
            Some(Epoch(1)),
            "no majority yet"
        );
        // b follows a standing master's own vote (its test below), and
        // echoes a's newest beat: a claims epoch 3, and holds a lease.
        add_vote(&mut v, "b", 3, "a");
        let last = a.beats.next - 1;
        v.members.get_mut(&n("b")).expect("b").beat = Some(beat_of(3, 10, &[("a", 7, last)]));
        a.handle(Time(2600), Event::View(v.clone()));
        assert!(drain(&mut a).contains(&Action::Persist {
            site: s("blog"),
            role: Role::Master,
            epoch: Epoch(3),
        }));
        assert_eq!(a.copy(&s("blog")).map(|c| c.1), Some(Epoch(3)));
        assert!(a.lease_until(&s("blog")).is_some_and(|l| l > Time(2600)));

        // b's side: a stays master at epoch 1 and votes for itself at 3;
        // b, which followed the hand-over to c, follows once c's lease is
        // out as far as its echoes go.
        let mut b = beating("b", vec![blog_copy(Role::Replica, 1, vec![head(5)], 3)]);
        let mut w = master_view(true);
        add_vote(&mut w, "a", 2, "c");
        w.members.get_mut(&n("c")).expect("c").keys =
            vec![SiteKey::Copy(s("blog"), copy_key(Role::Replica, 1, 5))];
        b.handle(Time(100), Event::View(w.clone()));
        assert_eq!(my_vote(&drain(&mut b)).map(|x| x.epoch), Some(Epoch(2)));
        w.members.get_mut(&n("c")).expect("c").alive = false;
        w.members
            .get_mut(&n("a"))
            .expect("a")
            .keys
            .retain(|k| !matches!(k, SiteKey::Vote(..)));
        add_vote(&mut w, "a", 3, "a");
        b.handle(Time(1000), Event::View(w.clone()));
        assert_eq!(my_vote(&drain(&mut b)), None, "c's lease may still run");
        let (t, vote) = first_vote(&mut b, Time(5000)).expect("b follows a");
        assert_eq!((vote.epoch, vote.candidate), (Epoch(3), n("a")));
        assert_eq!(t, Time(2500));
    }

    #[test]
    fn a_migration_target_pins_a_copy_catches_up_and_takes_over_at_the_next_epoch() {
        let mut b = started("b", vec![]);
        b.handle(Time(1), Event::View(one_copy_view()));
        assert!(drain(&mut b).is_empty(), "placement wants one copy only");
        b.handle(Time(2), Event::Pin(s("blog")));
        let pull = Action::Pull {
            site: s("blog"),
            from: n("a"),
        };
        assert_eq!(drain(&mut b), vec![pull.clone()]);
        b.handle(
            Time(3),
            Event::Done(s("blog"), Outcome::Pulled(Ok(vec![head(1), head(5)]))),
        );
        drain(&mut b);
        // The old master's final snapshot is 6: pulled from it, then the
        // claim of epoch 2 at once (no settle time), a majority having
        // voted for b there (a, which handed over, and b itself).
        b.handle(
            Time(4),
            Event::TakeOver {
                site: s("blog"),
                from: n("a"),
                epoch: Epoch(2),
                head: head(6),
                until: Time(10_000),
            },
        );
        assert_eq!(drain_but_votes(&mut b), vec![pull]);
        b.handle(
            Time(5),
            Event::Done(
                s("blog"),
                Outcome::Pulled(Ok(vec![head(1), head(5), head(6)])),
            ),
        );
        let acts = drain(&mut b);
        assert!(
            acts.contains(&Action::Promote {
                site: s("blog"),
                epoch: Epoch(2)
            }),
            "{acts:?}"
        );
        assert_eq!(
            b.copy(&s("blog")).map(|c| (c.0, c.1)),
            Some((Role::Master, Epoch(2)))
        );
    }

    #[test]
    fn a_hand_over_goes_through_the_votes_like_any_promotion() {
        let replica = || blog_copy(Role::Replica, 1, vec![head(5)], 3);
        let mut v = master_view(true);
        for r in ["b", "c"] {
            v.members.get_mut(&n(r)).expect("replica").keys =
                vec![SiteKey::Copy(s("blog"), copy_key(Role::Replica, 1, 5))];
        }
        // Only the master hands over.
        let mut r = started("c", vec![replica()]);
        r.handle(Time(6000), Event::View(v.clone()));
        drain(&mut r);
        assert!(r.hand_over(&s("blog"), &n("b")).is_err());
        let mut a = started("a", vec![blog_copy(Role::Master, 1, vec![head(5)], 3)]);
        a.handle(Time(6000), Event::View(v.clone()));
        drain(&mut a);
        assert_eq!(a.hand_over(&s("blog"), &n("b")), Ok(Epoch(2)));
        let vote = Vote {
            epoch: Epoch(2),
            candidate: n("b"),
        };
        assert_eq!(
            drain(&mut a)[0],
            Action::PersistVote {
                site: s("blog"),
                vote: vote.clone()
            }
        );
        // It voted at 2: a second hand-over picks 3.
        assert_eq!(a.hand_over(&s("blog"), &n("c")), Ok(Epoch(3)));
        drain(&mut a);

        // A replica follows the standing master's vote.
        add_vote(&mut v, "a", 2, "b");
        let mut c = started("c", vec![replica()]);
        c.handle(Time(6000), Event::View(v.clone()));
        assert!(
            drain(&mut c).contains(&Action::PersistVote {
                site: s("blog"),
                vote: vote.clone()
            }),
            "c votes for b at 2"
        );
        assert_eq!(c.vote(&s("blog")), Some(&vote));

        // The target claims epoch 2 only with a majority: its own vote and
        // a's make two of three; its own alone is not enough.
        let take = Event::TakeOver {
            site: s("blog"),
            from: n("a"),
            epoch: Epoch(2),
            head: head(5),
            until: Time(20_000),
        };
        let mut lone = started("b", vec![replica()]);
        lone.handle(Time(6000), Event::View(master_view(true)));
        drain(&mut lone);
        lone.handle(Time(6001), take.clone());
        let acts = drain(&mut lone);
        assert!(!promotes(&acts, "blog"), "one vote of three: {acts:?}");
        let mut b = started("b", vec![replica()]);
        b.handle(Time(6000), Event::View(v));
        drain(&mut b);
        b.handle(Time(6001), take);
        let acts = drain(&mut b);
        assert!(promotes(&acts, "blog"), "{acts:?}");
        assert_eq!(b.copy(&s("blog")).map(|c| c.1), Some(Epoch(2)));
    }

    #[test]
    fn a_takeover_past_its_deadline_or_fenced_is_dropped() {
        for (until, fence) in [(Time(4), 1), (Time(10_000), 2)] {
            let mut b = started(
                "b",
                vec![blog_copy(Role::Replica, 1, vec![head(1), head(5)], 1)],
            );
            b.handle(Time(1), Event::View(one_copy_view()));
            drain(&mut b);
            b.handle(
                Time(4),
                Event::TakeOver {
                    site: s("blog"),
                    from: n("a"),
                    epoch: Epoch(2),
                    head: head(6),
                    until,
                },
            );
            assert_eq!(
                drain_but_votes(&mut b).len(),
                1,
                "the pull of the final snapshot"
            );
            if fence > 1 {
                // Meanwhile another node claimed epoch 2 (a failover).
                let mut v = one_copy_view();
                v.members.get_mut(&n("c")).expect("c").keys =
                    vec![SiteKey::Copy(s("blog"), copy_key(Role::Master, fence, 5))];
                b.handle(Time(5), Event::View(v));
            }
            b.handle(
                Time(50),
                Event::Done(
                    s("blog"),
                    Outcome::Pulled(Ok(vec![head(1), head(5), head(6)])),
                ),
            );
            let acts = drain(&mut b);
            assert!(
                !acts.iter().any(|a| matches!(a, Action::Promote { .. })),
                "until {until:?}, fence {fence}: {acts:?}"
            );
            assert_eq!(b.copy(&s("blog")).map(|c| c.0), Some(Role::Replica));
        }
    }

    #[test]
    fn a_takeover_completes_when_the_pull_brings_a_snapshot_past_the_final_one() {
        let mut b = started(
            "b",
            vec![blog_copy(Role::Replica, 1, vec![head(1), head(5)], 1)],
        );
        b.handle(Time(1), Event::View(one_copy_view()));
        drain(&mut b);
        b.handle(
            Time(4),
            Event::TakeOver {
                site: s("blog"),
                from: n("a"),
                epoch: Epoch(2),
                head: head(6),
                until: Time(20_000),
            },
        );
        let pull = Action::Pull {
            site: s("blog"),
            from: n("a"),
        };
        assert_eq!(drain_but_votes(&mut b), vec![pull]);
        // The old master snapshotted once more after its final snapshot
        // (a change it noticed late): the pull brings both.
        b.handle(
            Time(5),
            Event::Done(
                s("blog"),
                Outcome::Pulled(Ok(vec![head(1), head(5), head(6), head(7)])),
            ),
        );
        let acts = drain(&mut b);
        assert!(
            acts.contains(&Action::Promote {
                site: s("blog"),
                epoch: Epoch(2)
            }),
            "{acts:?}"
        );
        assert_eq!(
            b.copy(&s("blog")),
            Some((Role::Master, Epoch(2), Some(head(7))))
        );
    }

    #[test]
    fn a_pin_and_a_takeover_do_not_wait_out_an_earlier_backoff() {
        let mut b = started(
            "b",
            vec![blog_copy(Role::Replica, 1, vec![head(1), head(5)], 1)],
        );
        let pull = Action::Pull {
            site: s("blog"),
            from: n("a"),
        };
        let mut v = one_copy_view();
        v.members.get_mut(&n("a")).expect("a").keys[0] =
            SiteKey::Copy(s("blog"), copy_key(Role::Master, 1, 6));
        b.handle(Time(1), Event::View(v));
        // (b follows a's hand-over vote at once, even in its start's grace:
        // it is the standing master's own vote.)
        assert_eq!(drain_but_votes(&mut b), vec![pull.clone()]);
        // Pulls fail (the master's node restarting, a transfer cut): the
        // backoff grows to its ceiling.
        // Ticks at each time asked for until the pull is retried: when.
        let retried = |b: &mut Node| -> u64 {
            loop {
                let t = b.poll_timeout().expect("a retry time");
                b.handle(t, Event::Tick);
                let acts = drain_but_votes(b);
                if !acts.is_empty() {
                    assert_eq!(acts, vec![pull.clone()]);
                    return t.0;
                }
            }
        };
        let mut t = 1;
        for _ in 0..8 {
            b.handle(
                Time(t),
                Event::Done(
                    s("blog"),
                    Outcome::Pulled(Err(PullError::Failed("cut".into()))),
                ),
            );
            assert!(drain(&mut b).is_empty(), "backing off");
            t = retried(&mut b);
        }
        b.handle(
            Time(t + 1),
            Event::Done(
                s("blog"),
                Outcome::Pulled(Err(PullError::Failed("cut".into()))),
            ),
        );
        let retry = b.poll_timeout().expect("a retry time").0;
        assert!(
            retry - (t + 1) >= 10_000,
            "the backoff is at its ceiling: {}",
            retry - (t + 1)
        );
        // A migration pins the copy: it pulls at once.
        b.handle(Time(t + 2), Event::Pin(s("blog")));
        assert_eq!(drain(&mut b), vec![pull.clone()]);
        b.handle(
            Time(t + 3),
            Event::Done(
                s("blog"),
                Outcome::Pulled(Err(PullError::Failed("cut".into()))),
            ),
        );
        assert!(drain(&mut b).is_empty(), "backing off again");
        // The hand-over: the final snapshot is pulled at once, and a
        // failure is retried after the shortest delay.
        b.handle(
            Time(t + 4),
            Event::TakeOver {
                site: s("blog"),
                from: n("a"),
                epoch: Epoch(2),
                head: head(7),
                until: Time(t + 20_000),
            },
        );
        assert_eq!(drain_but_votes(&mut b), vec![pull.clone()]);
        b.handle(
            Time(t + 5),
            Event::Done(
                s("blog"),
                Outcome::Pulled(Err(PullError::Failed("cut".into()))),
            ),
        );
        let retry = retried(&mut b);
        assert!(retry - (t + 5) <= 400, "{}", retry - (t + 5));
        b.handle(
            Time(retry + 1),
            Event::Done(
                s("blog"),
                Outcome::Pulled(Ok(vec![head(1), head(5), head(6), head(7)])),
            ),
        );
        assert!(drain(&mut b).contains(&Action::Promote {
            site: s("blog"),
            epoch: Epoch(2)
        }));
    }
}
