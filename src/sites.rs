//! The site driver: runs the model's node state machine against real
//! gossip and real storage.
//!
//! One task owns the `model::Node`. It feeds it the gossip view, timer
//! ticks, admin commands and the outcomes of the actions it executed, and
//! executes every action it gets back: gossip keys directly, storage and
//! transfers on their own tasks (storage calls on blocking threads), whose
//! outcomes come back as events. The decisions are all in the model.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use gossip::{ClusterView, Gossip, MemberState};
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

/// Pruning lists a chain (zfs calls): do it every this many snapshots.
const PRUNE_EVERY: u64 = 8;

/// Where a site's spec lives inside its dataset.
pub const SPEC_FILE: &str = ".ringhost/site.toml";
/// Key of the stashes a node holds of a site (written by this driver).
pub const STASH_PREFIX: &str = "stash:";

pub type Store = Arc<dyn SnapshotStore>;

#[derive(Debug)]
enum Cmd {
    Create(SiteSpec, oneshot::Sender<Result<(), String>>),
    Written(SiteName, oneshot::Sender<Result<Head, String>>),
    Delete(SiteName),
    Copy(
        SiteName,
        oneshot::Sender<Option<(Role, Epoch, Option<Head>)>>,
    ),
    Done(SiteName, Outcome),
    /// Snapshot now (a migration's final snapshot); answered like `Written`.
    Flush(SiteName, oneshot::Sender<Result<Head, String>>),
    /// Pin, Unpin, or a TakeOver whose deadline is `within` from now.
    Migration(MigrationEvent),
    /// What the model says of the local copy (`site show`).
    Explain(SiteName, oneshot::Sender<Option<model::Explain>>),
    /// A migration's hand-over: vote for the target, answer the epoch it
    /// is to claim (`model::Node::hand_over`).
    HandOver(SiteName, NodeName, oneshot::Sender<Result<Epoch, String>>),
    /// The hand-over failed: the master claims the site again
    /// (`model::Node::abort_hand_over`).
    AbortHandOver(SiteName),
}

/// The model events of a live migration, as the driver takes them.
#[derive(Debug)]
pub enum MigrationEvent {
    Pin(SiteName),
    Unpin(SiteName),
    TakeOver {
        site: SiteName,
        from: NodeName,
        epoch: Epoch,
        head: Head,
        within: Duration,
    },
}

/// When each master head was first seen, to tell how far behind a copy is.
#[derive(Debug, Default)]
pub struct LagBook {
    seen: BTreeMap<SiteName, BTreeMap<u64, Instant>>,
}

impl LagBook {
    /// Seconds since the master published the first snapshot that a copy
    /// at `seq` lacks; 0 when the copy is current.
    pub fn lag_s(&self, site: &SiteName, seq: u64, master_seq: u64) -> f64 {
        if seq >= master_seq {
            return 0.0;
        }
        self.seen
            .get(site)
            .and_then(|m| m.range(seq + 1..).next())
            .map(|(_, t)| t.elapsed().as_secs_f64())
            .unwrap_or(0.0)
    }

    #[allow(clippy::disallowed_methods)] // the driver owns the clock
    fn record(&mut self, site: &SiteName, seq: u64) {
        let m = self.seen.entry(site.clone()).or_default();
        m.entry(seq).or_insert_with(Instant::now);
        while m.len() > 256 {
            m.pop_first();
        }
    }
}

/// The handle the admin API and the stream server use.
#[derive(Clone)]
pub struct Sites {
    tx: mpsc::Sender<Cmd>,
    pub store: Store,
    pub gossip: Arc<Gossip>,
    pub me: NodeName,
    pub lag: Arc<Mutex<LagBook>>,
    pub prune: model::PrunePolicy,
    /// Bytes of snapshot streams this node served, per site and peer
    /// (counted as they are sent).
    pub sent: Arc<Mutex<BTreeMap<(SiteName, String), u64>>>,
    /// The node's proxy, once serving started (live migration uses its
    /// gates and routes).
    pub proxy: Arc<std::sync::OnceLock<proxy::Proxy>>,
    /// Sites a live migration holds on this node (their commands stopped),
    /// and whether the serving side has stopped them yet.
    pub frozen: Arc<Mutex<BTreeMap<SiteName, bool>>>,
    /// Wakes the serving side to look at `frozen` again.
    pub wake_serving: Arc<tokio::sync::Notify>,
    /// Master copies ready to serve here: writable and mounted (a promotion
    /// finished). A claim alone is not enough: serving a copy while its
    /// promotion remounts it would write beside the dataset. Each with the
    /// count of promotions this run had made ready when it became ready:
    /// a command started under another one is stale.
    pub serving_ready: Arc<Mutex<BTreeMap<SiteName, u64>>>,
    /// Promotions made ready in this run.
    pub ready_count: Arc<std::sync::atomic::AtomicU64>,
    /// Sites whose command a stepping-down master waits to see stopped,
    /// with the waiters: the serving side answers once no command of the
    /// site runs here (see [`Sites::quiesce`]).
    pub quiesce: Arc<Mutex<BTreeMap<SiteName, Vec<tokio::sync::oneshot::Sender<()>>>>>,
    /// Migrations this node started or relays, by site.
    pub migrations: Arc<Mutex<BTreeMap<SiteName, crate::migrate::Log>>>,
    /// The members this node knows, those remembered from before a restart
    /// included (`Node::known_members`): the proxy's quorum fence counts
    /// them.
    pub known: Arc<Mutex<std::collections::BTreeSet<NodeName>>>,
    /// The last migrations this node ran as a site's master, by site
    /// (`DATA_DIR/migrations.json`, gossiped as `migrations:<site>`).
    pub history: Arc<Mutex<BTreeMap<SiteName, Vec<crate::migrate::Record>>>>,
    /// Where `history` persists.
    pub history_path: PathBuf,
    /// Held while the stashes are listed and published, so a listing that
    /// started earlier never publishes after a later one.
    stash_listing: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Sites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sites")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// How long a stepping-down master waits for its site's command to stop.
const QUIESCE_WAIT: Duration = Duration::from_secs(15);

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

/// The model's view of the cluster from the gossip view.
pub fn model_view(v: &ClusterView) -> View {
    model::view_of(v.members.iter().map(|m| {
        (
            m.name.clone(),
            m.state == MemberState::Alive,
            m.state == MemberState::Left,
            m.zone.clone(),
            m.keys.iter().map(|(k, val)| (k.as_str(), val.as_str())),
        )
    }))
}

pub fn heads(snaps: &[storage::Snapshot]) -> Vec<Head> {
    snaps
        .iter()
        .filter_map(|s| {
            s.seq().map(|seq| Head {
                seq,
                guid: s.guid.0,
            })
        })
        .collect()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, storage::Error> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("storage task failed: {e}")),
    }
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

impl Sites {
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
        let (copies, persisted) = tokio::task::spawn_blocking(move || {
            local_copies(&s2, &persisted).map(|c| (c, persisted))
        })
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
                std::fs::read(data_dir.join(crate::migrate::HISTORY_FILE))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or_default(),
            )),
            history_path: data_dir.join(crate::migrate::HISTORY_FILE),
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
        crate::migrate::publish_history(&sites).await;
        Ok((sites, task))
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> Result<T, String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| "the site driver has stopped".to_owned())?;
        rx.await
            .map_err(|_| "the site driver has stopped".to_owned())
    }

    pub async fn create_local(&self, spec: SiteSpec) -> Result<(), String> {
        self.call(|tx| Cmd::Create(spec, tx)).await?
    }

    /// Tells the driver the master copy was written; resolves with the
    /// snapshot that holds the write.
    pub async fn written(&self, site: SiteName) -> Result<Head, String> {
        self.call(|tx| Cmd::Written(site, tx)).await?
    }

    /// Tells the driver that a master copy was written (a command
    /// runtime's own writes), without waiting: the next snapshot after the
    /// interval takes it. Dropped if the driver is busy; the next poll
    /// tells it again.
    pub fn mark_written(&self, site: SiteName) {
        let (tx, _ignored) = oneshot::channel();
        let _ = self.tx.try_send(Cmd::Written(site, tx));
    }

    /// Snapshots the master copy now; resolves with that snapshot.
    pub async fn flush(&self, site: SiteName) -> Result<Head, String> {
        self.call(|tx| Cmd::Flush(site, tx)).await?
    }

    /// A live migration's hand-over to `to`: this node, the site's
    /// master, votes for `to` at the next free epoch and answers it; `to`
    /// claims it once a majority followed that vote.
    pub async fn hand_over(&self, site: SiteName, to: NodeName) -> Result<Epoch, String> {
        self.call(|tx| Cmd::HandOver(site, to, tx)).await?
    }

    /// The hand-over of `site` failed: this node, its master, serves on
    /// and claims the site again above the epoch it voted for the target
    /// in; its lease is renewed once a majority voted so.
    pub async fn abort_hand_over(&self, site: SiteName) {
        let _ = self.tx.send(Cmd::AbortHandOver(site)).await;
    }

    pub async fn migration(&self, ev: MigrationEvent) -> Result<(), String> {
        self.tx
            .send(Cmd::Migration(ev))
            .await
            .map_err(|_| "the site driver has stopped".to_owned())
    }

    /// Marks the local master copy of `site` ready (or not) to serve.
    /// Ready, it serves through an open gate: a redirect left by an
    /// earlier migration away from this node points at a node whose claim
    /// this one's newer epoch fenced (without this, a site migrated back
    /// here within `REDIRECT_LINGER` bounced every request between the
    /// two nodes until the old redirect ended).
    pub fn ready(&self, site: &SiteName, ready: bool) {
        if ready
            && let Some(p) = self.proxy.get()
            && p.gates().end_redirect(site.as_str())
        {
            info!(%site, "serving here again: the gate's earlier redirect ends");
        }
        {
            let mut r = self
                .serving_ready
                .lock()
                .expect("ready lock is never poisoned");
            if ready {
                r.entry(site.clone()).or_insert_with(|| {
                    1 + self
                        .ready_count
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                });
            } else {
                r.remove(site);
            }
        }
        self.wake_serving.notify_one();
    }

    /// Waits until no command of `site` runs on this node (the site must
    /// no longer be ready: the serving side stops its command and starts
    /// none). A master stepping down snapshots what it holds only after
    /// this: a command still running would go on acknowledging writes
    /// after that snapshot, and zfs-fuse keeps a mounted dataset writable
    /// after `readonly=on`. Gives up after `QUIESCE_WAIT` (no serving side
    /// runs, or it is stuck) and says so.
    pub async fn quiesce(&self, site: &SiteName) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.quiesce
            .lock()
            .expect("quiesce lock is never poisoned")
            .entry(site.clone())
            .or_default()
            .push(tx);
        self.wake_serving.notify_one();
        if tokio::time::timeout(QUIESCE_WAIT, rx).await.is_err() {
            warn!(%site, "the site's command was not seen stopped; snapshotting anyway");
        }
    }

    /// Whether the local master copy of `site` may be served.
    pub fn is_ready(&self, site: &SiteName) -> bool {
        self.serving_ready
            .lock()
            .expect("ready lock is never poisoned")
            .contains_key(site)
    }

    /// Which promotion of `site` made the local master copy ready in this
    /// run, if it is ready ([`Sites::ready`]).
    pub fn ready_since(&self, site: &SiteName) -> Option<u64> {
        self.serving_ready
            .lock()
            .expect("ready lock is never poisoned")
            .get(site)
            .copied()
    }

    pub async fn delete(&self, site: SiteName) -> Result<(), String> {
        self.tx
            .send(Cmd::Delete(site))
            .await
            .map_err(|_| "the site driver has stopped".to_owned())
    }

    /// The local copy of `site` and the election as this node sees it.
    pub async fn explain(&self, site: &SiteName) -> Option<model::Explain> {
        self.call(|tx| Cmd::Explain(site.clone(), tx))
            .await
            .ok()
            .flatten()
    }

    pub async fn local_copy(&self, site: &SiteName) -> Option<(Role, Epoch, Option<Head>)> {
        self.call(|tx| Cmd::Copy(site.clone(), tx))
            .await
            .ok()
            .flatten()
    }

    /// Publishes `stash:<site>` keys for the stashes this node holds.
    async fn publish_stashes(&self) {
        let _one_at_a_time = self.stash_listing.lock().await;
        let store = self.store.clone();
        let Ok(stashes) = blocking(move || store.stashes()).await else {
            return;
        };
        let mut by_site: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in stashes {
            by_site.entry(s.site.to_string()).or_default().push(s.name);
        }
        for (site, names) in by_site {
            let value = serde_json::to_string(&names).unwrap_or_default();
            self.gossip
                .set(&format!("{STASH_PREFIX}{site}"), &value)
                .await;
        }
    }

    /// Serves one stream a peer opened to this node.
    pub async fn serve_stream(&self, incoming: gossip::IncomingStream) {
        let peer = incoming.peer.clone();
        let mut s = incoming.stream;
        let req: Request = match rpc::read_frame(&mut s.reader).await {
            Ok(r) => r,
            Err(e) => {
                warn!(peer = %incoming.addr, error = %format!("{e:#}"), "bad request on a mesh stream");
                return;
            }
        };
        debug!(peer = %peer, ?req, "mesh request");
        let result = match req {
            Request::Pull { site, have } => self.serve_pull(site, have, &peer, &mut s).await,
            Request::Chain { site } => {
                let store = self.store.clone();
                let chain = blocking(move || store.snapshots(&site))
                    .await
                    .unwrap_or_default();
                rpc::write_frame(
                    &mut s.writer,
                    &ChainReply {
                        guids: chain.iter().map(|c| c.guid.0.to_string()).collect(),
                    },
                )
                .await
            }
            Request::Create { spec } => {
                let reply = match self.create_local(spec).await {
                    Ok(()) => rpc::Reply::ok(),
                    Err(e) => rpc::Reply::err(500, e),
                };
                rpc::write_frame(&mut s.writer, &reply).await
            }
            Request::Push { site } => {
                let reply = crate::push::receive_local(self, &site, s.reader).await;
                rpc::write_frame(&mut s.writer, &reply).await
            }
            Request::Log { site } => crate::serving::serve_log(&site, &mut s).await,
            Request::Migrate { site, to } => {
                crate::migrate::serve_migrate(self, site, to, &mut s).await
            }
            Request::MigratePin { site, unpin } => {
                crate::migrate::serve_pin(self, site, unpin, &mut s).await
            }
            Request::MigrateStatus { site } => {
                crate::migrate::serve_status(self, site, &mut s).await
            }
            Request::MigrateTakeOver {
                site,
                epoch,
                seq,
                guid,
                within_ms,
            } => {
                let head = guid.parse().ok().map(|guid| Head { seq, guid });
                crate::migrate::serve_takeover(self, &peer, site, epoch, head, within_ms, &mut s)
                    .await
            }
        };
        if let Err(e) = result {
            debug!(peer = %peer, error = %format!("{e:#}"), "mesh request ended early");
        }
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut s.writer).await;
    }

    async fn serve_pull(
        &self,
        site: SiteName,
        have: Vec<String>,
        peer: &str,
        s: &mut gossip::MeshStream,
    ) -> anyhow::Result<()> {
        let store = self.store.clone();
        let site2 = site.clone();
        let mine = match blocking(move || store.snapshots(&site2)).await {
            Ok(m) => m,
            Err(e) => {
                return rpc::write_frame(&mut s.writer, &PullReply::Refused { error: e }).await;
            }
        };
        let Some(newest) = mine.last() else {
            return rpc::write_frame(
                &mut s.writer,
                &PullReply::Refused {
                    error: format!("site '{site}' has no snapshot here"),
                },
            )
            .await;
        };
        let have: Vec<u64> = have.iter().filter_map(|g| g.parse().ok()).collect();
        let common = mine
            .iter()
            .rev()
            .find(|m| have.contains(&m.guid.0))
            .map(|m| m.guid);
        let reply = match have.last() {
            None => PullReply::Send {
                from: None,
                to: newest.guid.0.to_string(),
                seq: newest.seq().unwrap_or(0),
            },
            Some(last) if *last == newest.guid.0 => PullReply::UpToDate,
            Some(last) if !mine.iter().any(|m| m.guid.0 == *last) => PullReply::Diverged {
                common: common.map(|g| g.0.to_string()),
            },
            Some(last) => PullReply::Send {
                from: Some(last.to_string()),
                to: newest.guid.0.to_string(),
                seq: newest.seq().unwrap_or(0),
            },
        };
        rpc::write_frame(&mut s.writer, &reply).await?;
        let PullReply::Send { from, .. } = reply else {
            return Ok(());
        };
        let from = from.and_then(|g| g.parse().ok()).map(Guid);
        let to = newest.guid;
        let key = (site.clone(), peer.to_owned());
        let counter = self.sent.clone();
        let store = self.store.clone();
        let writer = std::mem::replace(&mut s.writer, Box::new(tokio::io::sink()));
        let mut bridge = tokio_util::io::SyncIoBridge::new(writer);
        let sent = tokio::task::spawn_blocking(move || -> Result<u64, String> {
            // The chain listed above names the snapshots: no second listing
            // before the stream starts.
            let mut stream = store
                .send_listed(&site, &mine, from, to)
                .map_err(|e| e.to_string())?;
            // Large reads and writes: the stream crosses a pipe, TLS and QUIC.
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0u64;
            loop {
                let got = std::io::Read::read(&mut stream, &mut buf).map_err(|e| e.to_string())?;
                if got == 0 {
                    break;
                }
                std::io::Write::write_all(&mut bridge, &buf[..got]).map_err(|e| e.to_string())?;
                n += got as u64;
                // Counted as it goes: a migration's progress reads it.
                *counter
                    .lock()
                    .expect("sent lock is never poisoned")
                    .entry(key.clone())
                    .or_insert(0) += got as u64;
            }
            std::io::Write::flush(&mut bridge).map_err(|e| e.to_string())?;
            bridge.shutdown().map_err(|e| e.to_string())?;
            Ok(n)
        })
        .await
        .map_err(|e| anyhow::anyhow!("send task failed: {e}"))?;
        match sent {
            Ok(n) => debug!(bytes = n, "pull served"),
            Err(e) => warn!(error = %e, "sending a snapshot stream failed"),
        }
        Ok(())
    }
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
        crate::daemon::write_atomic(&self.state_path, &body)
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
