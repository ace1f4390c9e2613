//! The invariants checked as the run goes and at its end: fencing (one
//! master per site and epoch, only under a lease), no lost snapshot, no
//! lost replicated write, every site served with its full replica count
//! once faults heal.

use std::time::Duration;

use model::{Epoch, Head, Role, SiteName};
use storage::SnapshotStore;

use super::state::{SiteLayer, site_of};
use crate::world::Shared;

impl SiteLayer {
    /// Fencing: a node never serves a site while its own view shows a copy
    /// at a higher epoch. Also ends pending failovers this node now serves.
    pub(super) fn check_node(&mut self, i: usize, now: Duration, world: &Shared) {
        let Some(mem) = &self.nodes[i].mem else {
            return;
        };
        let mut fenced = None;
        for (site, (fence, by)) in &mem.fence {
            if let Some(epoch) = self.serving(i, site)
                && epoch < *fence
            {
                fenced = Some(format!(
                    "{} serves {site} as master at epoch {epoch} although its view shows {by}'s \
                     copy at epoch {fence} (a fenced master serving)",
                    self.nodes[i].name
                ));
                break;
            }
        }
        if let Some(what) = fenced {
            self.fail(world, what);
        }
        let done: Vec<SiteName> = self
            .failover_pending
            .keys()
            .filter(|s| self.serving(i, s).is_some())
            .cloned()
            .collect();
        for site in done {
            if let Some(t) = self.failover_pending.remove(&site) {
                self.failover.push(now - t);
                Self::trace(
                    world,
                    format_args!(
                        "failover {site} to {} after {:.3}s",
                        self.nodes[i].name,
                        (now - t).as_secs_f64()
                    ),
                );
            }
        }
    }

    /// Whether the history of snapshot `head` includes snapshot `g` (at
    /// `seq`): `g` is `head` or one of its ancestors.
    pub(super) fn descends(&self, head: u64, g: u64, seq: u64) -> bool {
        let mut cur = head;
        loop {
            if cur == g {
                return true;
            }
            match self.snaps.get(&cur) {
                Some(s) if s.seq > seq => match s.parent {
                    Some(p) if self.snaps.get(&p).is_none_or(|ps| ps.seq < s.seq) => cur = p,
                    _ => return false,
                },
                _ => return false,
            }
        }
    }

    pub(super) fn mark_replicated(&mut self, i: usize, site: &SiteName, head: Head, now: Duration) {
        let Some(acked) = self.acked.get(site) else {
            return;
        };
        let newly: Vec<u64> = acked
            .iter()
            .filter(|(g, a)| {
                a.replicated.is_none()
                    && a.node != i
                    && a.seq <= head.seq
                    && self.descends(head.guid, **g, a.seq)
            })
            .map(|(g, _)| *g)
            .collect();
        let acked = self.acked.get_mut(site).expect("checked above");
        for g in newly {
            if let Some(a) = acked.get_mut(&g) {
                a.replicated = Some(now);
            }
        }
    }

    /// Replicated writes survive a single crash: a node promoted for a site
    /// holds every acknowledged write that had reached a replica, unless
    /// more than one node crashed since it did, or a partition was on
    /// since it was acknowledged.
    pub(super) fn check_promotion(
        &mut self,
        i: usize,
        site: &SiteName,
        epoch: Epoch,
        world: &Shared,
    ) {
        let Some(head) = self.nodes[i]
            .disk
            .store
            .snapshots(site)
            .ok()
            .and_then(|c| c.last().map(|s| (s.guid.0, s.seq().unwrap_or(0))))
        else {
            return;
        };
        let Some(acked) = self.acked.get(site) else {
            return;
        };
        for (g, a) in acked {
            let Some(since) = a.replicated else { continue };
            if self.descends(head.0, *g, a.seq) {
                continue;
            }
            let crashes = self.crash_starts.iter().filter(|t| **t >= since).count();
            // A partition since (or while) the write was acknowledged can
            // leave the only replicas holding it on the side that does not
            // elect: a second fault, not this invariant's business. (Its
            // replicas may pull it just after the heal, before they see
            // the other side's new master: found by the simulator.)
            let acked_at = self.snaps.get(g).map_or(since, |s| s.taken);
            let partitions = self
                .partitions
                .iter()
                .any(|(_, end)| end.is_none_or(|e| e >= acked_at));
            if crashes <= 1 && !partitions {
                let what = format!(
                    "{} was promoted for {site} at epoch {epoch} with head seq {} that lacks {} \
                     acknowledged write(s) of snapshot seq {} (guid {g}, acknowledged by {} at \
                     epoch {}), replicated at {:.3}s, after {crashes} crash(es) and no partition",
                    self.nodes[i].name,
                    head.1,
                    a.writes,
                    a.seq,
                    self.nodes[a.node].name,
                    a.epoch,
                    since.as_secs_f64()
                );
                self.fail(world, what);
                return;
            }
        }
    }

    /// Recounts which snapshots node `i` holds of `site` (chain and
    /// stashes); a snapshot no disk holds any more is lost.
    pub(super) fn resync(&mut self, i: usize, site: &SiteName, world: &Shared) {
        let store = &self.nodes[i].disk.store;
        let mut now_held: Vec<u64> = store
            .snapshots(site)
            .unwrap_or_default()
            .iter()
            .map(|s| s.guid.0)
            .collect();
        for stash in store.stashes().unwrap_or_default() {
            if stash.site == *site {
                now_held.extend(stash.snapshots.iter().map(|s| s.guid.0));
            }
        }
        now_held.sort_unstable();
        now_held.dedup();
        let before = self.held.remove(&(i, site.clone())).unwrap_or_default();
        let mut lost = None;
        for g in &before {
            if now_held.binary_search(g).is_err() {
                let count = self.holdings.get_mut(g).expect("a held guid is counted");
                *count -= 1;
                if *count == 0 {
                    self.holdings.remove(g);
                    lost.get_or_insert(*g);
                }
            }
        }
        for g in &now_held {
            if before.binary_search(g).is_err() {
                *self.holdings.entry(*g).or_insert(0) += 1;
            }
        }
        self.held.insert((i, site.clone()), now_held);
        if let Some(g) = lost {
            let seq = self.snaps.get(&g).map_or(0, |s| s.seq);
            let what = format!(
                "snapshot {g} (seq {seq}) of {site} is lost: {} dropped it and no chain or \
                 stash on any node holds it",
                self.nodes[i].name
            );
            self.fail(world, what);
        }
    }

    // ---- clients ------------------------------------------------------

    /// When every site must have settled, once the last fault event passed.
    pub(crate) fn settle_deadline(&self) -> Duration {
        self.last_fault_event + self.settings.settle
    }

    /// The first site that has no single master or lacks copies, if any.
    pub(crate) fn unsettled(&self) -> Option<String> {
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].mem.is_some())
            .collect();
        for site in &self.created {
            let k = site_of(site).expect("sites are s<k>");
            let masters: Vec<(usize, Epoch)> = up
                .iter()
                .filter_map(|&i| self.serving(i, site).map(|e| (i, e)))
                .collect();
            let copies = up
                .iter()
                .filter(|&&i| {
                    self.nodes[i]
                        .mem
                        .as_ref()
                        .and_then(|m| m.node.copy(site))
                        .is_some_and(|(role, _, head)| role != Role::Diverged && head.is_some())
                })
                .count();
            let want = usize::from(self.specs[k].replicas).min(up.len());
            if masters.len() != 1 {
                let names: Vec<String> = masters
                    .iter()
                    .map(|(i, e)| format!("{}@e{e}", self.nodes[*i].name))
                    .collect();
                return Some(format!(
                    "{site} has {} serving masters [{}]",
                    masters.len(),
                    names.join(" ")
                ));
            }
            if copies < want {
                return Some(format!(
                    "{site} has {copies} copies on live nodes, wants {want}"
                ));
            }
        }
        None
    }
}
