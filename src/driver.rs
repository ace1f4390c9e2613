//! The site driver: runs the model's node state machine against real
//! gossip and real storage.
//!
//! One task owns the `model::Node`. It feeds it the gossip view, timer
//! ticks, the commands of the node context ([`Sites`]) and the outcomes of
//! the actions it executed, and executes every action it gets back: gossip
//! keys directly, storage and transfers on their own tasks (storage calls
//! on blocking threads), whose outcomes come back as events. The decisions
//! are all in the model.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use gossip::{ClusterView, Gossip};
use model::{
    Action, Epoch, Event, LocalCopy, Node, NodeConfig, NodeName, Outcome, PullError, SiteKey,
    SiteName, SiteSpec, Time, View,
    election::{Head, Role},
};
use serde::{Deserialize, Serialize};
use storage::{Guid, SnapshotStore};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use crate::rpc::{self, ChainReply, PullReply, Request};
use crate::sites::{Cmd, MigrationEvent, SPEC_FILE, Sites, Store, blocking, heads, model_view};

/// Pruning lists a chain (zfs calls): do it every this many snapshots.
const PRUNE_EVERY: u64 = 8;

/// How often the driver logs why a site it holds has no master.
const UNSERVED_REPORT: Duration = Duration::from_secs(5);

/// Durable role and epoch of each local copy (`DATA_DIR/sites.json`).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    sites: BTreeMap<SiteName, PersistedCopy>,
    /// The members this node knew (`Node::known_members`): after a
    /// restart they count for the quorum guard before gossip finds them.
    #[serde(default)]
    members: std::collections::BTreeSet<NodeName>,
    /// This node's last vote in each site's election (`Node::restore_votes`):
    /// kept before it is published, so that a restart never votes twice in
    /// one epoch.
    #[serde(default)]
    votes: BTreeMap<SiteName, model::Vote>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct PersistedCopy {
    role: Role,
    epoch: Epoch,
}

/// Reads the local copies (with their persisted roles) for `Event::Start`.
fn local_copies(store: &Store, persisted: &Persisted) -> anyhow::Result<Vec<LocalCopy>> {
    let mut out = Vec::new();
    for site in store.sites().context("cannot list local sites")? {
        let chain = heads(&store.snapshots(&site)?);
        let spec = store
            .read_file(&site, std::path::Path::new(SPEC_FILE))
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| toml::from_str::<SiteSpec>(&t).ok());
        let p = persisted
            .sites
            .get(&site)
            .copied()
            .unwrap_or(PersistedCopy {
                role: Role::Replica,
                epoch: Epoch(0),
            });
        // A writable copy was a master (or being made one) when this node
        // stopped: what it holds beyond its newest snapshot may be writes
        // it acknowledged, which exist nowhere else.
        let changed = !store.is_readonly(&site)? && store.changed(&site)? != storage::Changed::No;
        if changed {
            info!(%site, "the copy may hold changes after its newest snapshot: they will be snapshotted");
        }
        out.push(LocalCopy {
            site,
            role: p.role,
            epoch: p.epoch,
            chain,
            spec,
            changed,
        });
    }
    Ok(out)
}

/// Starts the driver. Returns the handle and the driver task.
pub async fn start(
    cfg: NodeConfig,
    prune: model::PrunePolicy,
    store: Store,
    gossip: Arc<Gossip>,
    data_dir: PathBuf,
) -> anyhow::Result<(Sites, tokio::task::JoinHandle<()>)> {
    let state_path = data_dir.join("sites.json");
    let persisted: Persisted = std::fs::read(&state_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let s2 = store.clone();
    // The persisted roles go to the blocking task and come back for the
    // driver: sites.json is read once.
    let (copies, persisted) =
        tokio::task::spawn_blocking(move || local_copies(&s2, &persisted).map(|c| (c, persisted)))
            .await
            .context("storage task failed")??;
    info!(copies = copies.len(), "local site copies found");
    let (tx, rx) = mpsc::channel(256);
    let sites = Sites {
        tx: tx.clone(),
        store,
        me: cfg.name.clone(),
        gossip,
        lag: Arc::default(),
        prune,
        sent: Arc::default(),
        proxy: Arc::default(),
        frozen: Arc::default(),
        wake_serving: Arc::default(),
        serving_ready: Arc::default(),
        ready_count: Arc::default(),
        quiesce: Arc::default(),
        migrations: Arc::default(),
        known: Arc::default(),
        history: Arc::new(Mutex::new(
            std::fs::read(data_dir.join(crate::migration_log::HISTORY_FILE))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default(),
        )),
        history_path: data_dir.join(crate::migration_log::HISTORY_FILE),
        stash_listing: Arc::default(),
    };
    let mut node = Node::new(cfg);
    node.remember(persisted.members.iter().cloned());
    node.restore_votes(persisted.votes.clone());
    #[allow(clippy::disallowed_methods)] // the driver owns the clock
    let origin = Instant::now();
    let sites_at_start: Vec<SiteName> = copies.iter().map(|c| c.site.clone()).collect();
    node.handle(Time(0), Event::Start(copies));
    // A master copy still master after the start (the quorum guard
    // holds with the members remembered) serves at once; one that
    // stepped down waits for an election like any replica.
    for site in sites_at_start {
        if node.copy(&site).is_some_and(|c| c.0 == Role::Master) {
            sites.ready(&site, true);
        }
    }
    *sites.known.lock().expect("known lock is never poisoned") = node.known_members();
    let driver = Driver {
        live: std::collections::BTreeSet::new(),
        node,
        origin,
        sites: sites.clone(),
        rx,
        state_path,
        persisted,
        waiters: BTreeMap::new(),
        settle: Vec::new(),
        tasks: JoinSet::new(),
        unsaved_votes: std::collections::BTreeSet::new(),
    };
    let task = tokio::spawn(driver.run());
    // Listing the stashes reads a few properties of each (one stash per
    // divergence kept): with many of them and a busy zfs daemon that
    // takes seconds, which the start no longer waits for.
    let s2 = sites.clone();
    tokio::spawn(async move { s2.publish_stashes().await });
    Ok((sites, task))
}

struct Driver {
    node: Node,
    /// The live members of the last view (logged when it changes).
    live: std::collections::BTreeSet<NodeName>,
    origin: Instant,
    sites: Sites,
    rx: mpsc::Receiver<Cmd>,
    state_path: PathBuf,
    persisted: Persisted,
    /// Per site: waiters for the snapshot that holds a write, with the
    /// number of snapshot actions issued before the write.
    waiters: BTreeMap<SiteName, Waiters>,
    /// Outcomes whose waiters are answered after the next drain, with
    /// the number of the snapshot action a `Snapshot` outcome ends.
    settle: Vec<(SiteName, Outcome, Option<u64>)>,
    tasks: JoinSet<()>,
    /// Vote keys whose `PersistVote` failed: their `Publish` is dropped.
    unsaved_votes: std::collections::BTreeSet<String>,
}

#[derive(Default)]
struct Waiters {
    issued: u64,
    in_flight: Option<u64>,
    pending: Vec<(u64, oneshot::Sender<Result<Head, String>>)>,
    create: Vec<oneshot::Sender<Result<(), String>>>,
}

impl Driver {
    fn now(&self) -> Time {
        Time(self.origin.elapsed().as_millis() as u64)
    }

    async fn run(mut self) {
        let mut view_rx: watch::Receiver<ClusterView> = self.sites.gossip.view();
        self.drain_actions().await;
        // Now and then, say why a local copy's site has no master: an
        // operator (or a test that timed out) reads the reason in the log.
        let mut unserved = tokio::time::interval(UNSERVED_REPORT);
        unserved.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let sleep = match self.node.poll_timeout() {
                Some(t) => Duration::from_millis(t.0.saturating_sub(self.now().0)),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                changed = view_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let view = model_view(&view_rx.borrow_and_update());
                    self.record_lag(&view);
                    let live: std::collections::BTreeSet<NodeName> = view
                        .members
                        .iter()
                        .filter(|(_, m)| m.alive && !m.left)
                        .map(|(n, _)| n.clone())
                        .collect();
                    if live != self.live {
                        let gone: Vec<&NodeName> = self.live.difference(&live).collect();
                        let came: Vec<&NodeName> = live.difference(&self.live).collect();
                        info!(?gone, ?came, alive = live.len(), "live members changed");
                        self.live = live;
                    }
                    let now = self.now();
                    self.node.handle(now, Event::View(view));
                    self.remember_members();
                }
                cmd = self.rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    self.command(cmd);
                }
                _ = tokio::time::sleep(sleep) => {
                    let now = self.now();
                    self.node.handle(now, Event::Tick);
                }
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                _ = unserved.tick() => self.report_unserved(),
            }
            self.drain_actions().await;
        }
    }

    fn report_unserved(&self) {
        let now = self.now();
        for site in self.node.local_sites() {
            let Some(e) = self.node.explain(site, now) else {
                continue;
            };
            if matches!(e.decision, model::MasterDecision::Keep { .. }) {
                continue;
            }
            info!(
                %site,
                decision = ?e.decision,
                role = ?e.role,
                epoch = %e.epoch,
                busy = e.busy,
                failures = e.failures,
                retry_in_ms = e.retry_in_ms,
                alive = e.quorum.alive_members,
                warm = e.promotion.alive_members,
                known = e.quorum.known_members,
                elections_in_ms = e.elections_in_ms,
                next_look_in_ms = ?e.next_tick_in_ms,
                "no master serves the site"
            );
        }
    }

    fn record_lag(&self, view: &View) {
        let mut lag = self.sites.lag.lock().expect("lag lock is never poisoned");
        for m in view.members.values() {
            for k in &m.keys {
                if let SiteKey::Copy(site, ck) = k
                    && ck.role == Role::Master
                {
                    lag.record(site, ck.seq);
                }
            }
        }
    }

    fn command(&mut self, cmd: Cmd) {
        let now = self.now();
        match cmd {
            Cmd::Create(spec, reply) => {
                if self.node.copy(&spec.name).is_some() {
                    let _ = reply.send(Err(format!("site '{}' already exists here", spec.name)));
                    return;
                }
                self.waiters
                    .entry(spec.name.clone())
                    .or_default()
                    .create
                    .push(reply);
                self.node.handle(now, Event::Create(spec));
            }
            Cmd::Written(site, reply) => {
                let w = self.waiters.entry(site.clone()).or_default();
                w.pending.push((w.issued, reply));
                self.node.handle(now, Event::Written(site));
            }
            Cmd::Delete(site) => self.node.handle(now, Event::Delete(site)),
            Cmd::Flush(site, reply) => {
                let w = self.waiters.entry(site.clone()).or_default();
                w.pending.push((w.issued, reply));
                self.node.handle(now, Event::Flush(site));
            }
            Cmd::Migration(ev) => {
                let ev = match ev {
                    MigrationEvent::Pin(site) => Event::Pin(site),
                    MigrationEvent::Unpin(site) => Event::Unpin(site),
                    MigrationEvent::TakeOver {
                        site,
                        from,
                        epoch,
                        head,
                        within,
                    } => Event::TakeOver {
                        site,
                        from,
                        epoch,
                        head,
                        until: now.plus(within),
                    },
                };
                self.node.handle(now, ev);
            }
            Cmd::Copy(site, reply) => {
                let _ = reply.send(self.node.copy(&site));
            }
            Cmd::Explain(site, reply) => {
                let _ = reply.send(self.node.explain(&site, now));
            }
            Cmd::HandOver(site, to, reply) => {
                // The vote is kept, then published, by the actions drained
                // after this command.
                let _ = reply.send(self.node.hand_over(&site, &to));
            }
            Cmd::AbortHandOver(site) => self.node.abort_hand_over(&site),
            Cmd::Done(site, outcome) => {
                // Waiters are answered after the actions this outcome
                // causes ran, so that what they are told is already
                // published. Which snapshot ended is read now: those
                // actions may issue the next one, which replaces it.
                let k = match outcome {
                    Outcome::Snapshot(_) => {
                        self.waiters.get_mut(&site).and_then(|w| w.in_flight.take())
                    }
                    _ => None,
                };
                self.settle.push((site.clone(), outcome.clone(), k));
                self.node.handle(now, Event::Done(site, outcome));
            }
        }
    }

    fn settle_waiters(&mut self, site: &SiteName, outcome: &Outcome, k: Option<u64>) {
        let Some(w) = self.waiters.get_mut(site) else {
            return;
        };
        match outcome {
            Outcome::Created(r) => {
                for tx in w.create.drain(..) {
                    let _ = tx.send(r.as_ref().map(|_| ()).map_err(Clone::clone));
                }
            }
            Outcome::Snapshot(r) => {
                // A write registered before snapshot k was issued is in
                // it; one registered later waits for the next snapshot
                // (a migration's final snapshot must not be answered by
                // one issued before the site's command stopped).
                let Some(k) = k else { return };
                let (ready, rest): (Vec<_>, Vec<_>) =
                    w.pending.drain(..).partition(|(before, _)| *before < k);
                w.pending = rest;
                for (_, tx) in ready {
                    let _ = tx.send(r.clone());
                }
            }
            _ => {}
        }
    }

    async fn drain_actions(&mut self) {
        while let Some(action) = self.node.poll_action() {
            self.execute(action).await;
        }
        for (site, outcome, k) in std::mem::take(&mut self.settle) {
            self.settle_waiters(&site, &outcome, k);
        }
        self.hand_leases_to_gates();
    }

    /// Gives each master site's gate the end of this node's lease on it
    /// (`model::lease`): past it the gate holds new work, then refuses it.
    /// The gate reads the clock itself; this renews it after every event.
    fn hand_leases_to_gates(&self) {
        let Some(proxy) = self.sites.proxy.get() else {
            return;
        };
        for site in self.node.local_sites() {
            let Some(t) = self.node.lease_until(site) else {
                continue;
            };
            let until = (t != Time::NEVER)
                .then(|| tokio::time::Instant::from_std(self.origin + Duration::from_millis(t.0)));
            proxy.gates().set_lease(site.as_str(), until);
        }
    }

    fn spawn_op<F>(&mut self, site: SiteName, fut: F)
    where
        F: std::future::Future<Output = Outcome> + Send + 'static,
    {
        let tx = self.sites.tx.clone();
        self.tasks.spawn(async move {
            let outcome = fut.await;
            if let Some(e) = failure(&outcome) {
                warn!(%site, error = %e, "site operation failed; it is retried");
            }
            let _ = tx.send(Cmd::Done(site, outcome)).await;
        });
    }

    async fn execute(&mut self, action: Action) {
        debug!(?action, "site action");
        let store = self.sites.store.clone();
        match action {
            Action::Publish { key, value } => {
                if self.unsaved_votes.remove(&key) {
                    // Its vote is not on disk: published, it could count
                    // twice after a restart. Not published, it counts for no one.
                    return;
                }
                self.sites.gossip.set(&key, &value).await
            }
            Action::PersistVote { site, vote } => {
                info!(%site, epoch = %vote.epoch, candidate = %vote.candidate, "vote cast");
                let key = model::site::vote_key(&site);
                self.persisted.votes.insert(site, vote);
                if let Err(e) = self.save() {
                    error!(error = %format!("{e:#}"), "cannot keep a vote on disk: it is not published");
                    self.unsaved_votes.insert(key);
                }
            }
            Action::Unpublish { key } => self.sites.gossip.delete(&key).await,
            Action::Persist { site, role, epoch } => {
                self.persisted
                    .sites
                    .insert(site, PersistedCopy { role, epoch });
                if let Err(e) = self.save() {
                    warn!(error = %format!("{e:#}"), "cannot persist site roles");
                }
            }
            Action::Create { site, spec } => {
                info!(%site, "creating site");
                let sites = self.sites.clone();
                self.spawn_op(site.clone(), async move {
                    let s2 = site.clone();
                    let r = blocking(move || create(&*store, &s2, &spec)).await;
                    if r.is_ok() {
                        sites.ready(&site, true);
                    }
                    Outcome::Created(r)
                });
            }
            Action::Snapshot { site, seq } => {
                let w = self.waiters.entry(site.clone()).or_default();
                w.issued += 1;
                w.in_flight = Some(w.issued);
                let protected = self.replica_heads(&site);
                let policy = self.sites.prune;
                self.spawn_op(site.clone(), async move {
                    let r = blocking(move || {
                        let snap = store.snapshot(&site, seq)?;
                        // Listing a chain costs zfs calls: prune every
                        // PRUNE_EVERY snapshots, not after each one.
                        if seq % PRUNE_EVERY == 0 {
                            prune(&*store, &site, &protected, &policy);
                        }
                        Ok(snap)
                    })
                    .await;
                    Outcome::Snapshot(r.map(|s| Head {
                        seq,
                        guid: s.guid.0,
                    }))
                });
            }
            Action::Pull { site, from } => {
                let sites = self.sites.clone();
                self.spawn_op(site.clone(), async move {
                    let r = pull(&sites, &site, &from).await;
                    // Prune now and then; the chain after it is what the
                    // copy holds.
                    let r = match r {
                        Ok(chain) if chain.len() as u64 > PRUNE_EVERY => {
                            let store = sites.store.clone();
                            let policy = sites.prune;
                            let s2 = site.clone();
                            blocking(move || {
                                prune(&*store, &s2, &std::collections::BTreeSet::new(), &policy);
                                store.snapshots(&s2)
                            })
                            .await
                            .map(|c| heads(&c))
                            .map_err(PullError::Failed)
                        }
                        other => other,
                    };
                    Outcome::Pulled(r)
                });
            }
            Action::Stash { site, from } => {
                let sites = self.sites.clone();
                self.spawn_op(site.clone(), async move {
                    let r = stash(&sites, &site, &from).await;
                    sites.publish_stashes().await;
                    Outcome::Stashed(r)
                });
            }
            Action::Promote { site, epoch } => {
                info!(%site, %epoch, "promoting to master");
                let sites = self.sites.clone();
                self.spawn_op(site.clone(), async move {
                    let s2 = site.clone();
                    let r = blocking(move || store.set_writable(&s2)).await;
                    if r.is_ok() {
                        // Only now may the site be served here: its copy
                        // is writable and (on zfs-fuse) freshly mounted.
                        sites.ready(&site, true);
                    }
                    Outcome::Switched(r)
                });
            }
            Action::Demote { site, seq } => {
                info!(%site, "stepping down to replica");
                self.sites.ready(&site, false);
                let sites = self.sites.clone();
                self.spawn_op(site.clone(), async move {
                    // The command stopped and the copy read-only first:
                    // nothing is acknowledged after the snapshot that
                    // keeps what was.
                    sites.quiesce(&site).await;
                    let r = blocking(move || {
                        store.set_readonly(&site)?;
                        let snap = store.snapshot_changes(&site, seq)?;
                        if let Some(s) = &snap {
                            info!(%site, snapshot = %s.name, "kept the changes after the last snapshot of a master that stepped down");
                        }
                        Ok(snap)
                    })
                    .await;
                    Outcome::Demoted(r.map(|snap| {
                        snap.map(|s| Head {
                            seq,
                            guid: s.guid.0,
                        })
                    }))
                });
            }
            Action::Destroy { site } => {
                info!(%site, "destroying the copy of a deleted site");
                self.persisted.sites.remove(&site);
                let _ = self.save();
                self.spawn_op(site.clone(), async move {
                    Outcome::Destroyed(blocking(move || store.destroy_site(&site)).await)
                });
            }
        }
    }

    /// The heads of the live replicas of `site` (their bases for the next
    /// incremental): pruning keeps them.
    fn replica_heads(&self, site: &SiteName) -> std::collections::BTreeSet<u64> {
        let view = model_view(&self.sites.gossip.view().borrow());
        model::holders(&view, site)
            .into_iter()
            .filter(|h| h.alive && h.node != self.sites.me)
            .map(|h| h.copy.head.guid)
            .collect()
    }

    /// Keeps the known members on disk (and for the proxy's fence)
    /// whenever they change.
    fn remember_members(&mut self) {
        let known = self.node.known_members();
        if known == self.persisted.members {
            return;
        }
        *self
            .sites
            .known
            .lock()
            .expect("known lock is never poisoned") = known.clone();
        self.persisted.members = known;
        if let Err(e) = self.save() {
            warn!(error = %e, "cannot save the known members");
        }
    }

    fn save(&self) -> anyhow::Result<()> {
        let body = serde_json::to_vec_pretty(&self.persisted)?;
        crate::files::write_atomic(&self.state_path, &body)
    }
}

/// Destroys the snapshots of `site` that `policy` lets go, never the head
/// nor a `protected` one. A snapshot that cannot go (a stash was cloned
/// from it) stays; failures are logged, not fatal.
fn prune(
    store: &dyn SnapshotStore,
    site: &SiteName,
    protected: &std::collections::BTreeSet<u64>,
    policy: &model::PrunePolicy,
) {
    let Ok(chain) = store.snapshots(site) else {
        return;
    };
    let aged: Vec<model::Aged> = chain
        .iter()
        .map(|s| model::Aged {
            guid: s.guid.0,
            created: s.created,
        })
        .collect();
    #[allow(clippy::disallowed_methods)] // retention is about wall-clock age
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for guid in model::to_prune(&aged, protected, policy, now) {
        match store.destroy_snapshot(site, Guid(guid)) {
            Ok(()) => debug!(%site, guid, "pruned a snapshot"),
            Err(storage::Error::HasDependents { .. }) => {}
            Err(e) => warn!(%site, guid, error = %e, "cannot prune a snapshot"),
        }
    }
}

/// The error of a failed outcome, for the log.
fn failure(o: &Outcome) -> Option<String> {
    match o {
        Outcome::Created(Err(e))
        | Outcome::Snapshot(Err(e))
        | Outcome::Stashed(Err(e))
        | Outcome::Switched(Err(e))
        | Outcome::Demoted(Err(e))
        | Outcome::Destroyed(Err(e))
        | Outcome::Pulled(Err(PullError::Failed(e))) => Some(e.clone()),
        _ => None,
    }
}

/// Creates a site's first copy: dataset, spec file, snapshot 1. On any
/// failure the dataset is destroyed again, so nothing is half-created.
fn create(
    store: &dyn SnapshotStore,
    site: &SiteName,
    spec: &SiteSpec,
) -> Result<Head, storage::Error> {
    store.create_site(site)?;
    let result = (|| {
        let body = toml::to_string(spec).map_err(|e| storage::Error::Io {
            context: format!("cannot encode the spec of site '{site}'"),
            source: std::io::Error::other(e),
        })?;
        store.write_file(site, std::path::Path::new(SPEC_FILE), body.as_bytes())?;
        store.snapshot(site, 1)
    })();
    match result {
        Ok(s) => Ok(Head {
            seq: 1,
            guid: s.guid.0,
        }),
        Err(e) => {
            if let Err(d) = store.destroy_site(site) {
                warn!(%site, error = %d, "cannot remove a half-created site");
            }
            Err(e)
        }
    }
}

async fn pull(sites: &Sites, site: &SiteName, from: &NodeName) -> Result<Vec<Head>, PullError> {
    let failed = |e: String| PullError::Failed(e);
    let store = sites.store.clone();
    let s2 = site.clone();
    // None: no copy here. The receive goes by this listing too.
    let listed = blocking(move || match store.snapshots(&s2) {
        Err(storage::Error::NoSuchSite { .. }) => Ok(None),
        other => other.map(Some),
    })
    .await
    .map_err(failed)?;
    let have = listed.clone().unwrap_or_default();
    let mut s = sites.gossip.open_stream(from).await.map_err(failed)?;
    rpc::write_frame(
        &mut s.writer,
        &Request::Pull {
            site: site.clone(),
            have: have.iter().map(|h| h.guid.0.to_string()).collect(),
        },
    )
    .await
    .map_err(|e| failed(format!("{e:#}")))?;
    let reply: PullReply = rpc::read_frame(&mut s.reader)
        .await
        .map_err(|e| failed(format!("{e:#}")))?;
    match reply {
        PullReply::UpToDate => return Ok(heads(&have)),
        PullReply::Diverged { .. } => return Err(PullError::Diverged),
        PullReply::Refused { error } => return Err(failed(error)),
        PullReply::Send {
            seq, from: base, ..
        } => {
            info!(%site, %from, seq, incremental = base.is_some(), "receiving snapshots")
        }
    }
    let store = sites.store.clone();
    let s2 = site.clone();
    let mut bridge = tokio_util::io::SyncIoBridge::new(s.reader);
    let received = tokio::task::spawn_blocking(move || {
        store.receive_listed(&s2, listed.as_deref(), &mut bridge)
    })
    .await
    .map_err(|e| failed(format!("receive task failed: {e}")))?;
    match received {
        // The chain is what we had plus what came (an incremental stream
        // carries one snapshot; a full one starts the chain).
        Ok(snap) => {
            let mut chain = if have.is_empty() {
                Vec::new()
            } else {
                heads(&have)
            };
            chain.extend(heads(std::slice::from_ref(&snap)));
            Ok(chain)
        }
        Err(storage::Error::Diverged { .. }) => Err(PullError::Diverged),
        // Changes after the newest snapshot (a master that lost its claim
        // before snapshotting its last writes): they are a divergence too,
        // kept in a stash rather than rolled back.
        Err(storage::Error::Modified { .. }) => Err(PullError::Diverged),
        Err(e) => Err(failed(e.to_string())),
    }
}

async fn stash(sites: &Sites, site: &SiteName, from: &NodeName) -> Result<Vec<Head>, String> {
    let mut s = sites.gossip.open_stream(from).await?;
    rpc::write_frame(&mut s.writer, &Request::Chain { site: site.clone() })
        .await
        .map_err(|e| format!("{e:#}"))?;
    let theirs: ChainReply = rpc::read_frame(&mut s.reader)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let theirs: Vec<u64> = theirs.guids.iter().filter_map(|g| g.parse().ok()).collect();
    let store = sites.store.clone();
    let site = site.clone();
    blocking(move || {
        let mine = store.snapshots(&site)?;
        let common = mine
            .iter()
            .rev()
            .find(|m| theirs.contains(&m.guid.0))
            .map(|m| m.guid);
        let stash = store.stash(&site, common)?;
        info!(%site, stash = %stash.name, "kept diverged snapshots as a stash");
        match store.snapshots(&site) {
            // Nothing in common: the whole copy went to the stash.
            Err(storage::Error::NoSuchSite { .. }) => Ok(Vec::new()),
            other => other.map(|c| heads(&c)),
        }
    })
    .await
}
