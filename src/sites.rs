//! The node context: [`Sites`], the handle every part of the daemon holds
//! (the admin API, serving, migration, uploads, the mesh request server).
//! It sends commands to the site driver (`driver.rs`), which owns the
//! model's node state machine, and it carries the state those parts share:
//! the store, gossip, the proxy once it runs, which sites serve, the
//! migration logs and records.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gossip::{ClusterView, Gossip, MemberState};
use model::{
    Epoch, NodeName, Outcome, SiteName, SiteSpec, View,
    election::{Head, Role},
};
use storage::SnapshotStore;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Where a site's spec lives inside its dataset.
pub const SPEC_FILE: &str = ".ringhost/site.toml";
/// Key of the stashes a node holds of a site (written by this driver).
pub const STASH_PREFIX: &str = "stash:";

pub type Store = Arc<dyn SnapshotStore>;

#[derive(Debug)]
pub(crate) enum Cmd {
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
    pub(crate) fn record(&mut self, site: &SiteName, seq: u64) {
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
    pub(crate) tx: mpsc::Sender<Cmd>,
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
    pub migrations: Arc<Mutex<BTreeMap<SiteName, crate::migration_log::Log>>>,
    /// The members this node knows, those remembered from before a restart
    /// included (`Node::known_members`): the proxy's quorum fence counts
    /// them.
    pub known: Arc<Mutex<std::collections::BTreeSet<NodeName>>>,
    /// The last migrations this node ran as a site's master, by site
    /// (`DATA_DIR/migrations.json`, gossiped as `migrations:<site>`).
    pub history: Arc<Mutex<BTreeMap<SiteName, Vec<crate::migration_log::Record>>>>,
    /// Where `history` persists.
    pub history_path: PathBuf,
    /// Held while the stashes are listed and published, so a listing that
    /// started earlier never publishes after a later one.
    pub(crate) stash_listing: Arc<tokio::sync::Mutex<()>>,
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

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, storage::Error> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("storage task failed: {e}")),
    }
}

impl Sites {
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
    pub(crate) async fn publish_stashes(&self) {
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
}
