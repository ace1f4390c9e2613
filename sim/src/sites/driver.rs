//! Driving each node's `model::Node` as the daemon's driver does: its
//! view rebuilt from its own chitchat state, events fed, actions executed
//! against the simulated disk, outcomes reported back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use chitchat::ChitchatId;
use model::{
    Action, Epoch, Event, Head, NodeName, Outcome, PullError, SiteKey, SiteName, SiteSpec, View,
};
use storage::SnapshotStore;

use super::settings::{Broken, SiteEvent};
use super::state::{Acked, Op, OpKind, SPEC_FILE, SiteLayer, SnapInfo, ms, node_of, parse_member};
use crate::node::{LEFT_KEY, SimNode};
use crate::world::{Shared, lock};

impl SiteLayer {
    pub(crate) async fn handle(&mut self, event: SiteEvent, nodes: &[SimNode], world: &Shared) {
        self.stats.events += 1;
        let now = lock(world).elapsed();
        for d in &self.nodes {
            d.disk.store.set_clock(1_700_000_000 + now.as_secs());
        }
        match event {
            SiteEvent::Step => {
                for i in 0..self.nodes.len() {
                    if self.nodes[i].mem.is_some() && self.refresh_view(i, nodes).await {
                        let view = self.model_view(i);
                        self.feed(i, now, Event::View(view), nodes, world).await;
                    }
                }
                self.outbox.push((now + self.interval, SiteEvent::Step));
            }
            SiteEvent::Timer(i, generation) => {
                if self.generation(i) == Some(generation) {
                    if let Some(mem) = &mut self.nodes[i].mem {
                        mem.timer = None;
                    }
                    self.feed(i, now, Event::Tick, nodes, world).await;
                }
            }
            SiteEvent::Create(k) => self.create(k, now, nodes, world).await,
            SiteEvent::Write => self.write(now, world),
            SiteEvent::WriteArrive {
                node,
                generation,
                site,
                id,
                bytes,
            } => {
                self.write_arrive(node, generation, site, id, bytes, now, nodes, world)
                    .await
            }
            SiteEvent::Op(id) => {
                if let Some(op) = self.ops.remove(&id) {
                    self.run_op(op, now, nodes, world).await;
                }
            }
        }
    }

    pub(super) async fn feed(
        &mut self,
        i: usize,
        now: Duration,
        event: Event,
        nodes: &[SimNode],
        world: &Shared,
    ) {
        let Some(mem) = &mut self.nodes[i].mem else {
            return;
        };
        let view = matches!(event, Event::View(_));
        mem.node.handle(ms(now), event);
        if view {
            self.stats.views_fed += 1;
            let known = mem.node.known_members();
            if known != self.nodes[i].disk.members {
                self.nodes[i].disk.members = known;
            }
        }
        self.drive(i, nodes, world).await;
    }

    /// The view the model is fed: the one built from chitchat (handed
    /// over), or for [`Broken::IgnoreEpochs`] a copy with every other copy
    /// at epoch 0.
    pub(super) fn model_view(&mut self, i: usize) -> View {
        let me = self.nodes[i].name.clone();
        let broken = self.settings.broken;
        let mem = self.nodes[i].mem.as_mut().expect("a running node");
        if broken == Some(Broken::NoVotes) {
            let mut view = std::mem::take(&mut mem.view);
            let mine: Vec<SiteKey> = self
                .specs
                .iter()
                .filter_map(|spec| {
                    let v = mem.node.vote(&spec.name)?;
                    Some(SiteKey::Vote(spec.name.clone(), v.clone()))
                })
                .collect();
            for (name, m) in &mut view.members {
                if *name != me {
                    m.keys.retain(|k| !matches!(k, SiteKey::Vote(..)));
                    m.keys.extend(mine.iter().cloned());
                }
            }
            return view;
        }
        if broken != Some(Broken::IgnoreEpochs) {
            return std::mem::take(&mut mem.view);
        }
        let mut view = mem.view.clone();
        {
            for (name, m) in &mut view.members {
                if *name == me {
                    continue;
                }
                for k in &mut m.keys {
                    if let SiteKey::Copy(_, ck) = k {
                        ck.epoch = Epoch(0);
                    }
                }
            }
        }
        view
    }

    /// Rebuilds node `i`'s view from its chitchat state as the daemon's
    /// gossip layer does; returns whether it changed.
    pub(super) async fn refresh_view(&mut self, i: usize, nodes: &[SimNode]) -> bool {
        let Some(handle) = nodes[i].chitchat() else {
            return false;
        };
        let me = self.nodes[i].name.clone();
        let chitchat = handle.chitchat();
        let c = chitchat.lock().await;
        let self_id = c.self_chitchat_id().clone();
        let live: BTreeSet<&ChitchatId> = c.live_nodes().collect();
        let mut newest: BTreeMap<NodeName, (&ChitchatId, &chitchat::NodeState, bool, bool)> =
            BTreeMap::new();
        for (id, state) in c.node_states() {
            let Ok(name) = id.node_id.parse::<NodeName>() else {
                continue;
            };
            let is_self = *id == self_id;
            if name == me && !is_self {
                continue;
            }
            let left = state.get(LEFT_KEY) == Some("1");
            let alive = is_self || live.contains(id);
            match newest.get(&name) {
                Some((old, ..)) if old.generation_id >= id.generation_id => {}
                _ => {
                    newest.insert(name, (id, state, alive, left));
                }
            }
        }
        let mem = self.nodes[i].mem.as_mut().expect("a running node");
        let unchanged = mem.fingerprint.len() == newest.len()
            && mem.fingerprint.iter().zip(&newest).all(
                |((n, g, v, a, l), (name, (id, state, alive, left)))| {
                    n == name
                        && *g == id.generation_id
                        && *v == state.max_version()
                        && a == alive
                        && l == left
                },
            );
        if unchanged {
            return false;
        }
        let mut view = View::default();
        let mut cache = BTreeMap::new();
        let mut fingerprint = Vec::with_capacity(newest.len());
        for (name, (id, state, alive, left)) in newest {
            let version = state.max_version();
            let parsed = match mem.cache.remove(id) {
                Some(p) if p.version == version => p,
                old => parse_member(state, old),
            };
            let mut shown = parsed.member.clone();
            shown.alive = alive;
            shown.left = left;
            fingerprint.push((name.clone(), id.generation_id, version, alive, left));
            view.members.insert(name, shown);
            cache.insert(id.clone(), parsed);
        }
        drop(c);
        let mut fence: BTreeMap<SiteName, (Epoch, NodeName)> = BTreeMap::new();
        for (name, m) in &view.members {
            if *name == me || m.left {
                continue;
            }
            for k in &m.keys {
                if let SiteKey::Copy(site, ck) = k {
                    let e = fence
                        .entry(site.clone())
                        .or_insert((ck.epoch, name.clone()));
                    if ck.epoch > e.0 {
                        *e = (ck.epoch, name.clone());
                    }
                }
            }
        }
        mem.cache = cache;
        mem.fingerprint = fingerprint;
        mem.view = view;
        mem.fence = fence;
        true
    }

    /// Executes node `i`'s actions until none is left, then sets its timer
    /// and checks the fencing invariant on it.
    pub(super) async fn drive(&mut self, i: usize, nodes: &[SimNode], world: &Shared) {
        let now = lock(world).elapsed();
        loop {
            let Some(mem) = &mut self.nodes[i].mem else {
                return;
            };
            let Some(action) = mem.node.poll_action() else {
                break;
            };
            self.execute(i, action, now, nodes, world).await;
        }
        let Some(mem) = &mut self.nodes[i].mem else {
            return;
        };
        if let Some(t) = mem.node.poll_timeout() {
            let t = t.max(ms(now));
            if mem.timer.is_none_or(|s| t < s) {
                mem.timer = Some(t);
                let generation = mem.generation;
                self.outbox
                    .push((Duration::from_millis(t.0), SiteEvent::Timer(i, generation)));
            }
        }
        self.check_node(i, now, world);
    }

    /// Takes snapshot `seq` of node `i`'s copy (with `only_changes`, only
    /// if it changed since its newest one) and records it; the guid taken.
    pub(super) fn take_snapshot(
        &mut self,
        i: usize,
        site: &SiteName,
        seq: u64,
        now: Duration,
        only_changes: bool,
        world: &Shared,
    ) -> Result<Option<u64>, String> {
        let store = &self.nodes[i].disk.store;
        let parent = store
            .snapshots(site)
            .ok()
            .and_then(|c| c.last().map(|s| s.guid.0));
        let result = if only_changes {
            store.snapshot_changes(site, seq)
        } else {
            store.snapshot(site, seq).map(Some)
        }
        .map_err(|e| e.to_string());
        if let Ok(Some(s)) = &result {
            let bytes = self.nodes[i].disk.dirty_bytes.remove(site).unwrap_or(0);
            self.snaps.insert(
                s.guid.0,
                SnapInfo {
                    seq,
                    parent,
                    taken: now,
                    bytes,
                },
            );
            self.stats.snapshots += 1;
        }
        self.resync(i, site, world);
        result.map(|s| s.map(|s| s.guid.0))
    }

    pub(super) async fn execute(
        &mut self,
        i: usize,
        action: Action,
        now: Duration,
        nodes: &[SimNode],
        world: &Shared,
    ) {
        let generation = self.generation(i).expect("a running node");
        let name = self.nodes[i].name.clone();
        let report = |site: SiteName, outcome: Outcome| Op {
            node: i,
            generation,
            site,
            started: now,
            kind: OpKind::Report(outcome),
        };
        let local = Duration::from_millis(5);
        match action {
            Action::Publish { key, value } => {
                if let Some(h) = nodes[i].chitchat() {
                    h.chitchat().lock().await.self_node_state().set(key, value);
                }
            }
            Action::Unpublish { key } => {
                if let Some(h) = nodes[i].chitchat() {
                    h.chitchat().lock().await.self_node_state().delete(&key);
                }
            }
            Action::PersistVote { site, vote } => {
                Self::trace(
                    world,
                    format_args!(
                        "site {name} vote {site} e{} for {}",
                        vote.epoch, vote.candidate
                    ),
                );
                self.nodes[i].disk.votes.insert(site, vote);
            }
            Action::Persist { site, role, epoch } => {
                self.nodes[i].disk.persisted.insert(site, (role, epoch));
            }
            Action::Create { site, spec } => {
                let result = self.create_on_disk(i, &site, &spec, now);
                Self::trace(world, format_args!("site {name} create {site} {result:?}"));
                if result.is_ok() {
                    self.created.insert(site.clone());
                    self.stats.created += 1;
                }
                self.resync(i, &site, world);
                let op = report(site, Outcome::Created(result));
                self.op(now + Duration::from_millis(50), op);
            }
            Action::Snapshot { site, seq } => {
                let w = self.nodes[i]
                    .mem
                    .as_mut()
                    .expect("a running node")
                    .waiters
                    .entry(site.clone())
                    .or_default();
                w.issued += 1;
                w.in_flight = Some(w.issued);
                let result = self.take_snapshot(i, &site, seq, now, false, world);
                let outcome = Outcome::Snapshot(result.map(|s| {
                    s.map(|g| Head { seq, guid: g })
                        .expect("a snapshot is taken whether or not the copy changed")
                }));
                self.op(now + local, report(site, outcome));
            }
            Action::Promote { site, epoch } => {
                let result = self.nodes[i]
                    .disk
                    .store
                    .set_writable(&site)
                    .map_err(|e| e.to_string());
                self.stats.promotions += 1;
                self.office
                    .entry(site.clone())
                    .or_default()
                    .entry(epoch)
                    .or_insert((now, i));
                Self::trace(world, format_args!("site {name} promote {site} e{epoch}"));
                self.check_promotion(i, &site, epoch, world);
                self.op(now + local, report(site, Outcome::Switched(result)));
            }
            Action::Demote { site, seq } => {
                let result = self.nodes[i]
                    .disk
                    .store
                    .set_readonly(&site)
                    .map_err(|e| e.to_string())
                    .and_then(|()| self.take_snapshot(i, &site, seq, now, true, world));
                self.stats.demotions += 1;
                Self::trace(world, format_args!("site {name} demote {site} {result:?}"));
                let outcome = Outcome::Demoted(result.map(|s| s.map(|g| Head { seq, guid: g })));
                self.op(now + local, report(site, outcome));
            }
            Action::Destroy { site } => {
                self.nodes[i].disk.persisted.remove(&site);
                let result = self.nodes[i]
                    .disk
                    .store
                    .destroy_site(&site)
                    .map_err(|e| e.to_string());
                Self::trace(world, format_args!("site {name} destroy {site}"));
                self.resync(i, &site, world);
                self.op(now + local, report(site, Outcome::Destroyed(result)));
            }
            Action::Pull { site, from } => {
                let have: Vec<u64> = self.nodes[i]
                    .disk
                    .store
                    .snapshots(&site)
                    .unwrap_or_default()
                    .iter()
                    .map(|s| s.guid.0)
                    .collect();
                self.stats.pulls += 1;
                match node_of(&from) {
                    Some(j) if j < self.nodes.len() => {
                        self.send(
                            i,
                            j,
                            now,
                            world,
                            Op {
                                node: i,
                                generation,
                                site,
                                started: now,
                                kind: OpKind::PullRequest { from: j, have },
                            },
                        );
                    }
                    _ => {
                        let outcome =
                            Outcome::Pulled(Err(PullError::Failed(format!("unknown node {from}"))));
                        self.op(now + local, report(site, outcome));
                    }
                }
            }
            Action::Stash { site, from } => match node_of(&from) {
                Some(j) if j < self.nodes.len() => {
                    self.send(
                        i,
                        j,
                        now,
                        world,
                        Op {
                            node: i,
                            generation,
                            site,
                            started: now,
                            kind: OpKind::StashRequest { from: j },
                        },
                    );
                }
                _ => {
                    let outcome = Outcome::Stashed(Err(format!("unknown node {from}")));
                    self.op(now + local, report(site, outcome));
                }
            },
        }
    }

    pub(super) fn create_on_disk(
        &mut self,
        i: usize,
        site: &SiteName,
        spec: &SiteSpec,
        now: Duration,
    ) -> Result<Head, String> {
        let store = &self.nodes[i].disk.store;
        store.create_site(site).map_err(|e| e.to_string())?;
        let result = store
            .write_file(
                site,
                Path::new(SPEC_FILE),
                model::site::encode_spec(spec).as_bytes(),
            )
            .and_then(|()| store.snapshot(site, 1));
        match result {
            Ok(s) => {
                let (lo, hi) = self.settings.site_bytes;
                let bytes = lo + self.rng.below(hi - lo + 1);
                self.snaps.insert(
                    s.guid.0,
                    SnapInfo {
                        seq: 1,
                        parent: None,
                        taken: now,
                        bytes,
                    },
                );
                Ok(Head {
                    seq: 1,
                    guid: s.guid.0,
                })
            }
            Err(e) => {
                let _ = store.destroy_site(site);
                Err(e.to_string())
            }
        }
    }

    /// Reports an outcome to node `i`'s model, then acknowledges the
    /// writes a snapshot holds (after the actions it caused ran, as the
    /// daemon's waiters are answered).
    pub(super) async fn done(
        &mut self,
        i: usize,
        site: SiteName,
        outcome: Outcome,
        now: Duration,
        nodes: &[SimNode],
        world: &Shared,
    ) {
        let snapshot = match &outcome {
            Outcome::Snapshot(r) => Some(r.clone()),
            _ => None,
        };
        self.feed(i, now, Event::Done(site.clone(), outcome), nodes, world)
            .await;
        let Some(result) = snapshot else { return };
        let Some(mem) = &mut self.nodes[i].mem else {
            return;
        };
        let Some(w) = mem.waiters.get_mut(&site) else {
            return;
        };
        let Some(k) = w.in_flight.take() else { return };
        let (ready, rest): (Vec<_>, Vec<_>) =
            w.pending.drain(..).partition(|(before, ..)| *before < k);
        w.pending = rest;
        let Ok(head) = result else { return };
        if ready.is_empty() {
            return;
        }
        if !self.leased(i, &site, now) {
            // Out of its lease: the writes are answered with an error.
            self.stats.writes_refused += ready.len() as u64;
            return;
        }
        let epoch = ready[0].2;
        for (_, _, e) in &ready {
            if let Some((e2, (t, by))) = self.office.get(&site).and_then(|o| {
                // Another node's office: this node taking office
                // again later carries its own history on.
                o.range(e.next()..)
                    .find(|(_, (t, by))| *t <= now && *by != i)
            }) {
                let what = format!(
                    "{} acknowledged writes to {site} at epoch {e} at {:.3}s, after {} took \
                     office at epoch {e2} at {:.3}s: two masters at once",
                    self.nodes[i].name,
                    now.as_secs_f64(),
                    self.nodes[*by].name,
                    t.as_secs_f64()
                );
                self.fail(world, what);
                break;
            }
        }
        for (_, _, e) in &ready {
            if let Some(&owner) = self.ack_owner.get(&(site.clone(), *e))
                && owner != i
            {
                let what = format!(
                    "{} acknowledged writes to {site} at epoch {e}, which {} already served: \
                     two masters at one epoch",
                    self.nodes[i].name, self.nodes[owner].name
                );
                self.fail(world, what);
            }
            self.ack_owner.insert((site.clone(), *e), i);
        }
        self.stats.writes_acked += ready.len() as u64;
        let entry = self
            .acked
            .entry(site.clone())
            .or_default()
            .entry(head.guid)
            .or_insert(Acked {
                seq: head.seq,
                node: i,
                epoch,
                writes: 0,
                replicated: None,
            });
        entry.writes += ready.len() as u64;
    }
}
