//! Faults as the site layer sees them: fault episodes starting and
//! ending, a node crashing (its model and operations gone, its disk kept)
//! and restarting (`Event::Start` with the copies read back).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use model::{Epoch, Event, LocalCopy, Node, NodeConfig, Role, SiteKey, SiteName, View};
use storage::SnapshotStore;

use super::state::{Mem, SPEC_FILE, SiteLayer, heads, ms};
use crate::node::SimNode;
use crate::world::{Shared, lock};

impl SiteLayer {
    pub(crate) fn on_fault_event(&mut self, at: Duration) {
        self.last_fault_event = at;
    }

    pub(crate) fn on_partition(&mut self, at: Duration, active: bool) {
        if active {
            self.partitions.push((at, None));
        } else if let Some((_, end)) = self.partitions.last_mut() {
            end.get_or_insert(at);
        }
    }

    /// Node `i` crashed or left: its memory is gone, its disk stays.
    pub(crate) fn on_down(&mut self, i: usize, at: Duration) {
        self.crash_starts.push(at);
        if !self.enabled() {
            return;
        }
        let served: Vec<SiteName> = match &self.nodes[i].mem {
            Some(_) => self.nodes[i]
                .disk
                .store
                .sites()
                .unwrap_or_default()
                .into_iter()
                .filter(|s| self.serving(i, s).is_some())
                .collect(),
            None => Vec::new(),
        };
        for site in served {
            self.failover_pending.entry(site).or_insert(at);
        }
        self.nodes[i].mem = None;
    }

    /// Node `i` started generation `generation`: `Event::Start` with the
    /// copies on its disk.
    pub(crate) async fn on_up(
        &mut self,
        i: usize,
        generation: u64,
        nodes: &[SimNode],
        world: &Shared,
    ) {
        if !self.enabled() {
            return;
        }
        let now = lock(world).elapsed();
        let disk = &self.nodes[i].disk;
        disk.store.set_clock(1_700_000_000 + now.as_secs());
        let mut copies = Vec::new();
        for site in disk.store.sites().unwrap_or_default() {
            let chain = heads(&disk.store.snapshots(&site).unwrap_or_default());
            let spec = disk
                .store
                .read_file(&site, Path::new(SPEC_FILE))
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|t| {
                    match model::site::parse_site_key(&model::site::spec_key(&site), &t) {
                        Some(SiteKey::Spec(_, spec)) => Some(spec),
                        _ => None,
                    }
                });
            let (role, epoch) = disk
                .persisted
                .get(&site)
                .copied()
                .unwrap_or((Role::Replica, Epoch(0)));
            // As the daemon does: a writable copy may hold changes.
            let changed = disk.store.is_readonly(&site).is_ok_and(|ro| !ro)
                && disk
                    .store
                    .changed(&site)
                    .is_ok_and(|c| c != storage::Changed::No);
            copies.push(LocalCopy {
                site,
                role,
                epoch,
                chain,
                spec,
                changed,
            });
        }
        let mut cfg = NodeConfig::new(self.nodes[i].name.clone());
        cfg.incarnation = generation;
        if let Some(settle) = self.settings.election_settle {
            cfg.election_settle = settle;
        }
        let mut node = Node::new(cfg);
        node.remember(disk.members.iter().cloned());
        node.restore_votes(disk.votes.clone());
        node.handle(ms(now), Event::Start(copies));
        self.nodes[i].mem = Some(Mem {
            generation,
            node,
            cache: BTreeMap::new(),
            fingerprint: Vec::new(),
            view: View::default(),
            fence: BTreeMap::new(),
            waiters: BTreeMap::new(),
            timer: None,
        });
        self.drive(i, nodes, world).await;
    }

    // ---- events ------------------------------------------------------
}
