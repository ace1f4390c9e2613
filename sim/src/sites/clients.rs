//! Clients: sites created through placement's first node, writes through
//! random nodes forwarded to the master their view names, acknowledged
//! once a snapshot holds them.

use std::path::Path;
use std::time::Duration;

use model::{Event, NodeName};
use storage::SnapshotStore;

use super::settings::{Broken, SiteEvent};
use super::state::{SiteLayer, node_of};
use crate::addr::node_ip;
use crate::node::SimNode;
use crate::world::{Shared, lock};

impl SiteLayer {
    pub(super) async fn create(
        &mut self,
        k: usize,
        now: Duration,
        nodes: &[SimNode],
        world: &Shared,
    ) {
        let spec = self.specs[k].clone();
        let up: Vec<(NodeName, Option<model::Zone>)> = self
            .nodes
            .iter()
            .filter(|n| n.mem.is_some())
            .map(|n| (n.name.clone(), None))
            .collect();
        let picks = model::placement(&spec.name, up.iter().map(|(n, z)| (n, z.as_ref())), 1);
        let Some(i) = picks.first().and_then(node_of) else {
            return;
        };
        self.feed(i, now, Event::Create(spec), nodes, world).await;
    }

    pub(super) fn write(&mut self, now: Duration, world: &Shared) {
        let rate = self.settings.write_rate;
        let gap = -(1.0 - self.rng.unit()).ln() / rate;
        self.outbox
            .push((now + Duration::from_secs_f64(gap), SiteEvent::Write));
        self.stats.writes += 1;
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].mem.is_some())
            .collect();
        if up.is_empty() || self.specs.is_empty() {
            return;
        }
        let entry = up[self.rng.index(up.len())];
        let k = self.rng.index(self.specs.len());
        let site = &self.specs[k].name;
        let mem = self.nodes[entry].mem.as_ref().expect("up");
        let view = if self.settings.broken == Some(Broken::IgnoreEpochs) {
            &mem.view
        } else {
            mem.node.view()
        };
        let Some(target) = model::serving_master(view, site).and_then(|(n, _)| node_of(&n)) else {
            self.stats.writes_unroutable += 1;
            return;
        };
        let Some(generation) = self.generation(target) else {
            // The entry's view is stale: the write times out.
            self.stats.writes_lost += 1;
            return;
        };
        let id = self.next_write;
        self.next_write += 1;
        let (lo, hi) = self.settings.write_bytes;
        let bytes = lo + self.rng.below(hi - lo + 1);
        let delay = if entry == target {
            Ok(Duration::ZERO)
        } else {
            lock(world)
                .net
                .site_link(node_ip(entry), node_ip(target), &mut self.rng)
        };
        match delay {
            Ok(d) => self.outbox.push((
                now + d,
                SiteEvent::WriteArrive {
                    node: target,
                    generation,
                    site: k,
                    id,
                    bytes,
                },
            )),
            Err(_) => self.stats.writes_lost += 1,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn write_arrive(
        &mut self,
        i: usize,
        generation: u64,
        k: usize,
        id: u64,
        bytes: u64,
        now: Duration,
        nodes: &[SimNode],
        world: &Shared,
    ) {
        let site = self.specs[k].name.clone();
        if self.generation(i) != Some(generation) {
            self.stats.writes_lost += 1;
            return;
        }
        let Some(epoch) = self.serving(i, &site) else {
            self.stats.writes_refused += 1;
            return;
        };
        if !self.leased(i, &site, now) {
            // The daemon's gate holds it, then refuses it.
            self.stats.writes_refused += 1;
            return;
        }
        let disk = &mut self.nodes[i].disk;
        let path = format!("data/w{}", id % 8);
        if disk
            .store
            .write_file(&site, Path::new(&path), &id.to_le_bytes())
            .is_err()
        {
            self.stats.writes_refused += 1;
            return;
        }
        *disk.dirty_bytes.entry(site.clone()).or_insert(0) += bytes;
        self.stats.writes_accepted += 1;
        let mem = self.nodes[i].mem.as_mut().expect("checked above");
        let w = mem.waiters.entry(site.clone()).or_default();
        w.pending.push((w.issued, id, epoch));
        self.feed(i, now, Event::Written(site), nodes, world).await;
    }

    // ---- settling ------------------------------------------------------
}
