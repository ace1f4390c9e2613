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
