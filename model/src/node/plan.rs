//! Planning: which sites to look at after an event, and, for each, what
//! its copy here does next (promote, demote, snapshot, pull, stash, take
//! a copy, destroy).

use super::state::{Node, SiteView};
use super::types::Action;
use crate::election::{MasterDecision, Quorum, Role};
use crate::ids::SiteName;
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

    /// Plans one site: this node's votes in its election, then what its
    /// copy here does next, or whether to take one.
    pub(super) fn plan_site(&mut self, site: &SiteName, quorum: Quorum, promotion: Quorum) {
        let sv = self.site_view(site);
        let decision = self.decide(site, &sv, promotion);
        self.vote_in_election(site, &sv, &decision);
        if !self.copies.contains_key(site) {
            self.take_a_copy(site, &sv, &decision);
            return;
        }
        self.step_down_if_fenced(site, &sv, quorum);
        self.plan_resume(site, &sv, promotion);
        self.plan_copy(site, &sv, decision, promotion);
    }

    /// The next action of the local copy, if it is free and its retry
    /// time came.
    fn plan_copy(
        &mut self,
        site: &SiteName,
        sv: &SiteView,
        decision: MasterDecision,
        promotion: Quorum,
    ) {
        let Some(c) = self.copies.get(site) else {
            return;
        };
        if c.busy || self.now < c.retry_at {
            return;
        }
        if self.start_pending(site, sv) {
            return;
        }
        let c = self.copies.get(site).expect("checked above");
        match c.role {
            Role::Master => self.snapshot_if_due(site),
            Role::Replica if c.takeover.is_some() => self.plan_takeover(site, sv, promotion),
            Role::Replica => self.plan_replica(site, sv, decision, promotion),
            Role::Diverged => self.plan_diverged(site, decision),
        }
    }

    /// Starts what the copy waits for: a demotion, a promotion that failed
    /// before, or its destruction (the site was deleted). Whether it did.
    fn start_pending(&mut self, site: &SiteName, sv: &SiteView) -> bool {
        let c = self.copies.get_mut(site).expect("a planned copy");
        if c.demote_pending {
            c.demote_pending = false;
            c.busy = true;
            let seq = c.head().map_or(1, |h| h.seq + 1);
            self.actions.push_back(Action::Demote {
                site: site.clone(),
                seq,
            });
            return true;
        }
        if c.promote_pending && c.role == Role::Master {
            c.promote_pending = false;
            c.busy = true;
            let epoch = c.epoch;
            self.actions.push_back(Action::Promote {
                site: site.clone(),
                epoch,
            });
            return true;
        }
        let spec_id = c.spec.as_ref().map(|s| s.id);
        if spec_id.is_some_and(|id| sv.deleted.contains(&id)) {
            c.busy = true;
            self.actions
                .push_back(Action::Destroy { site: site.clone() });
            return true;
        }
        false
    }

    /// A master snapshots a changed copy once the snapshot interval passed
    /// since its last snapshot, or at once when a flush asks for it.
    fn snapshot_if_due(&mut self, site: &SiteName) {
        let c = self.copies.get_mut(site).expect("a planned copy");
        let due =
            c.dirty && (c.flush || self.now >= c.last_snapshot.plus(self.cfg.snapshot_interval));
        if !due {
            return;
        }
        let seq = c.head().map_or(1, |h| h.seq + 1);
        c.busy = true;
        c.dirty = false;
        c.flush = false;
        self.actions.push_back(Action::Snapshot {
            site: site.clone(),
            seq,
        });
    }

    /// A replica: promoted when the election names this node and it won
    /// the votes (past the start's grace and the membership's settle
    /// time); otherwise it follows the standing master.
    fn plan_replica(
        &mut self,
        site: &SiteName,
        sv: &SiteView,
        decision: MasterDecision,
        promotion: Quorum,
    ) {
        let me = self.cfg.name.clone();
        let now = self.now;
        match decision {
            MasterDecision::Elect { node, epoch }
                if node == me
                    && now >= self.started_at.plus(self.cfg.election_grace)
                    && now >= self.membership_changed.plus(self.cfg.election_settle)
                    && self.won(site, sv, epoch, promotion.known_members) =>
            {
                self.take_office(site, epoch);
            }
            MasterDecision::Keep { node, epoch } if node != me => {
                self.follow(site, sv, node, epoch);
            }
            _ => {}
        }
    }
}
