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
