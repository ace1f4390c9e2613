//! The cluster mesh: one QUIC endpoint per node with mutual TLS, chitchat
//! gossip carried over it, and the typed cluster view built from gossip.
//!
//! This is the only crate that knows chitchat, quinn and rustls. It never
//! touches storage or serves HTTP.
//!
//! Trust: a peer is heard only after mutual TLS with a certificate from the
//! cluster CA. A gossiped node enters the [`ClusterView`] only once a
//! connection from its gossiped address presented a certificate for its
//! gossiped name, so a node cannot speak under another node's name. (A
//! holder of a valid certificate can still relay forged state about others:
//! membership in the cluster CA is trust; see ARCHITECTURE.md.)

mod certs;
pub mod keys;
mod mesh;
pub mod pki;
mod tls;
mod transport;
mod udp;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
pub use model::GossipSettings;
use model::{NodeName, Zone};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};

pub use mesh::{IncomingStream, MeshError, MeshStream, PeerNames};
pub use pki::Identity;
pub use tls::ALPN;

/// The facts a node gossips about itself (see docs/gossip-keys.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProxyAddrs {
    pub http: Vec<SocketAddr>,
    pub https: Vec<SocketAddr>,
}

/// Everything needed to join the mesh.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub identity: Identity,
    /// Chosen by the caller: grows at every start (start time in ms).
    pub generation: u64,
    pub listen: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    pub zone: Option<Zone>,
    pub capacity: u32,
    pub proxy: ProxyAddrs,
    pub settings: GossipSettings,
}

/// How a member looks from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    Alive,
    /// Known (its state arrived through another member) but not heard from
    /// directly yet, for at most `JOINING_FOR` after this node learnt of it:
    /// a member that just started, not a dead one. Not alive for any
    /// decision.
    Joining,
    Dead,
    Left,
}

/// How long a member this node has never seen alive counts as joining
/// before it counts as dead.
pub const JOINING_FOR: Duration = Duration::from_secs(10);

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MemberState::Alive => "alive",
            MemberState::Joining => "joining",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        })
    }
}

/// One member of the cluster: the newest generation seen of one node name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    pub name: NodeName,
    pub state: MemberState,
    pub generation: u64,
    pub mesh_addr: SocketAddr,
    pub zone: Option<Zone>,
    pub version: String,
    pub proxy: ProxyAddrs,
    pub capacity: u32,
    /// True for the node that produced this view.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Every gossiped key of this member (site keys and node facts).
    #[serde(skip)]
    pub keys: BTreeMap<String, String>,
}

/// The members this node believes in, sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClusterView {
    pub members: Vec<Member>,
}

/// Why gossip could not start. Nothing is left running or bound.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Mesh(#[from] MeshError),
    #[error("cannot start gossip: {0:#}")]
    Gossip(anyhow::Error),
}

/// Gossip traffic counters of this node.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TrafficStats {
    pub messages_sent: u64,
    pub messages_received: u64,
    /// chitchat message bytes.
    pub gossip_bytes_sent: u64,
    pub gossip_bytes_received: u64,
    /// UDP payload bytes of the whole mesh (QUIC and TLS overhead included).
    pub udp_bytes_sent: u64,
    pub udp_bytes_received: u64,
}

/// A running member of the mesh. Drop does not leave politely: call
/// [`Gossip::leave`] (peers see `left` at once) or [`Gossip::shutdown`].
pub struct Gossip {
    handle: ChitchatHandle,
    mesh: Arc<mesh::Shared>,
    view: watch::Receiver<ClusterView>,
    refresher: tokio::task::JoinHandle<()>,
    /// Wakes the refresher early (after this node changed its own keys).
    refresh: Arc<tokio::sync::Notify>,
    settings: GossipSettings,
    cluster: String,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("id", self.handle.chitchat_id())
            .finish_non_exhaustive()
    }
}

impl Gossip {
    pub async fn start(cfg: MeshConfig) -> Result<Gossip, StartError> {
        let (shared, inbound) = mesh::Shared::start(&cfg.identity, cfg.listen)?;
        let listen = shared
            .endpoint
            .local_addr()
            .map_err(|source| MeshError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let id = ChitchatId::new(cfg.identity.node.as_str(), cfg.generation, listen);
        let fd = FailureDetectorConfig {
            phi_threshold: cfg.settings.phi_threshold,
            initial_interval: cfg.settings.initial_interval(),
            dead_node_grace_period: cfg.settings.dead_node_grace,
            ..FailureDetectorConfig::default()
        };
        let config = ChitchatConfig {
            chitchat_id: id,
            cluster_id: cfg.identity.cluster.clone(),
            gossip_interval: cfg.settings.interval,
            listen_addr: listen,
            seed_nodes: cfg
                .seeds
                .iter()
                .filter(|s| **s != listen)
                .map(|s| s.to_string())
                .collect(),
            failure_detector_config: fd,
            marked_for_deletion_grace_period: cfg.settings.dead_node_grace,
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let facts = keys::node_facts(listen, &cfg.zone, cfg.capacity, &cfg.proxy);
        let transport = transport::MeshTransport {
            shared: shared.clone(),
            inbound: Mutex::new(Some(inbound)),
        };
        let handle = match chitchat::spawn_chitchat(config, facts, &transport).await {
            Ok(h) => h,
            Err(e) => {
                shared.shutdown().await;
                return Err(StartError::Gossip(e));
            }
        };
        let (tx, view) = watch::channel(ClusterView::default());
        let refresh = Arc::new(tokio::sync::Notify::new());
        let refresher = tokio::spawn(refresh_view(
            handle.chitchat(),
            shared.clone(),
            cfg.identity.node.clone(),
            cfg.settings.interval,
            refresh.clone(),
            tx,
        ));
        info!(node = %cfg.identity.node, mesh = %listen, cluster = %cfg.identity.cluster, "joined the mesh");
        Ok(Gossip {
            handle,
            mesh: shared,
            view,
            refresher,
            refresh,
            settings: cfg.settings,
            cluster: cfg.identity.cluster,
        })
    }

    /// The cluster's name (from the CA certificate).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The bound mesh address.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.chitchat_id().gossip_advertise_addr
    }

    /// The current view; it changes as gossip arrives.
    pub fn view(&self) -> watch::Receiver<ClusterView> {
        self.view.clone()
    }

    /// Sets one of this node's own keys. The local view shows it at once.
    pub async fn set(&self, key: &str, value: &str) {
        self.handle
            .with_chitchat(|c| c.self_node_state().set(key, value))
            .await;
        self.refresh.notify_one();
    }

    /// Deletes one of this node's own keys. The local view shows it at once.
    pub async fn delete(&self, key: &str) {
        self.handle
            .with_chitchat(|c| c.self_node_state().delete(key))
            .await;
        self.refresh.notify_one();
    }

    /// Incoming streams from peers, from now on. Call once; a stream that
    /// arrives while nobody serves them is refused.
    pub fn incoming_streams(&self) -> tokio::sync::mpsc::Receiver<IncomingStream> {
        self.mesh.serve_streams()
    }

    /// Opens a stream to member `node` (it must be in the view).
    pub async fn open_stream(&self, node: &NodeName) -> Result<MeshStream, String> {
        let addr = self
            .view
            .borrow()
            .members
            .iter()
            .find(|m| &m.name == node)
            .map(|m| (m.mesh_addr, m.state))
            .ok_or_else(|| format!("node '{node}' is not a member"))?;
        // A stream to a node the failure detector declared dead would
        // wait for a connection timeout: refuse it at once.
        match addr {
            (addr, MemberState::Alive) => self.mesh.open_stream(addr).await,
            (_, state) => Err(format!("node '{node}' is {state}")),
        }
    }

    pub fn traffic(&self) -> TrafficStats {
        let t = &self.mesh.traffic;
        let (udp_tx, udp_rx) = self.mesh.udp_bytes();
        TrafficStats {
            messages_sent: t.gossip_messages_sent.load(Ordering::Relaxed),
            messages_received: t.gossip_messages_received.load(Ordering::Relaxed),
            gossip_bytes_sent: t.gossip_bytes_sent.load(Ordering::Relaxed),
            gossip_bytes_received: t.gossip_bytes_received.load(Ordering::Relaxed),
            udp_bytes_sent: udp_tx,
            udp_bytes_received: udp_rx,
        }
    }

    /// Tells every peer this node is leaving, then stops. Peers list it as
    /// `left` at once instead of waiting for the failure detector.
    pub async fn leave(&self) {
        self.set(keys::LEFT, "1").await;
        let me = self.local_addr();
        let peers: BTreeSet<SocketAddr> = self
            .handle
            .with_chitchat(|c| {
                c.live_nodes()
                    .map(|id| id.gossip_advertise_addr)
                    .filter(|a| *a != me)
                    .collect()
            })
            .await;
        // Two direct rounds: the first can race a connection being set up.
        for _ in 0..2 {
            for peer in &peers {
                let _ = self.handle.gossip(*peer);
            }
            tokio::time::sleep(self.settings.interval.min(Duration::from_millis(150))).await;
        }
        self.shutdown().await;
    }

    /// Stops gossip and closes the mesh without telling anyone.
    pub async fn shutdown(&self) {
        self.refresher.abort();
        if self.handle.initiate_shutdown().is_ok() {
            let _ = self.handle.termination_watcher().await;
        }
        self.mesh.shutdown().await;
    }
}

/// Rebuilds the view every gossip interval and publishes it when it changed.
async fn refresh_view(
    chitchat: Arc<tokio::sync::Mutex<chitchat::Chitchat>>,
    mesh: Arc<mesh::Shared>,
    me: NodeName,
    interval: Duration,
    refresh: Arc<tokio::sync::Notify>,
    tx: watch::Sender<ClusterView>,
) {
    let mut warned: HashSet<(SocketAddr, String)> = HashSet::new();
    let mut seen = Seen::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = refresh.notified() => {}
        }
        let mut unverified = Vec::new();
        let view = {
            let c = chitchat.lock().await;
            build_view(&c, &mesh.names, &me, &mut seen, &mut unverified)
        };
        for (addr, claimed, presented) in unverified {
            match presented {
                Some(cert_name) => {
                    if warned.insert((addr, claimed.clone())) {
                        warn!(peer = %addr, claimed = %claimed, certificate = %cert_name,
                            "ignoring gossip: the peer's certificate names another node than it claims");
                    }
                }
                // Not met yet: dial it, so its certificate is seen.
                None => mesh.probe(addr),
            }
        }
        // Members that just died: their connection goes now, so that
        // streams over it (tunneled requests, transfers) fail at once
        // instead of waiting for the connection's idle timeout.
        let dead: Vec<SocketAddr> = {
            let old = tx.borrow();
            view.members
                .iter()
                .filter(|m| m.state != MemberState::Alive && !m.is_self)
                .filter(|m| {
                    old.members
                        .iter()
                        .any(|o| o.name == m.name && o.state == MemberState::Alive)
                })
                .map(|m| m.mesh_addr)
                .collect()
        };
        for addr in dead {
            mesh.close_peer(addr, "declared dead by the failure detector");
        }
        tx.send_if_modified(|old| {
            if *old != view {
                *old = view;
                true
            } else {
                false
            }
        });
    }
}

/// What this node has seen of each member generation: when it learnt of
/// it, and whether it ever saw it alive (to tell joining from dead).
#[derive(Default)]
struct Seen {
    first: HashMap<ChitchatId, tokio::time::Instant>,
    live: HashSet<ChitchatId>,
}

impl Seen {
    /// The state of a member that is neither alive nor gone.
    fn not_alive(&mut self, id: &ChitchatId, now: tokio::time::Instant) -> MemberState {
        let first = *self.first.entry(id.clone()).or_insert(now);
        if self.live.contains(id) || now.duration_since(first) >= JOINING_FOR {
            MemberState::Dead
        } else {
            MemberState::Joining
        }
    }
}

/// The view as the chitchat state says, keeping only nodes whose name was
/// proven by their certificate at their gossiped address.
fn build_view(
    c: &chitchat::Chitchat,
    names: &PeerNames,
    me: &NodeName,
    seen: &mut Seen,
    unverified: &mut Vec<(SocketAddr, String, Option<String>)>,
) -> ClusterView {
    let now = tokio::time::Instant::now();
    let live: HashSet<&ChitchatId> = c.live_nodes().collect();
    let known: HashSet<&ChitchatId> = c.node_states().keys().collect();
    seen.first.retain(|id, _| known.contains(id));
    seen.live.retain(|id| known.contains(id));
    let mut newest: BTreeMap<NodeName, Member> = BTreeMap::new();
    for (id, state) in c.node_states() {
        let Ok(name) = id.node_id.parse::<NodeName>() else {
            continue;
        };
        let is_self = *id == *c.self_chitchat_id();
        if !is_self {
            let presented = names.get(&id.gossip_advertise_addr);
            if presented.as_deref() != Some(&*id.node_id) {
                unverified.push((id.gossip_advertise_addr, id.node_id.to_string(), presented));
                continue;
            }
        }
        if name == *me && !is_self {
            // An older generation of this very node.
            continue;
        }
        let kv: BTreeMap<String, String> = state
            .key_values()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let member_state = if kv.get(keys::LEFT).map(String::as_str) == Some("1") {
            MemberState::Left
        } else if is_self || live.contains(id) {
            seen.first.entry(id.clone()).or_insert(now);
            seen.live.insert(id.clone());
            MemberState::Alive
        } else {
            seen.not_alive(id, now)
        };
        let member = keys::member_from(name.clone(), id, member_state, is_self, kv);
        match newest.get(&name) {
            Some(m) if m.generation >= member.generation => {}
            _ => {
                newest.insert(name, member);
            }
        }
    }
    ClusterView {
        members: newest.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_never_seen_alive_is_joining_for_a_while_then_dead() {
        let t0 = tokio::time::Instant::now();
        let addr: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
        let (new, old) = (
            ChitchatId::new("n2", 2, addr),
            ChitchatId::new("n3", 1, addr),
        );
        let mut seen = Seen::default();
        assert_eq!(seen.not_alive(&new, t0), MemberState::Joining);
        assert_eq!(
            seen.not_alive(&new, t0 + JOINING_FOR / 2),
            MemberState::Joining
        );
        assert_eq!(seen.not_alive(&new, t0 + JOINING_FOR), MemberState::Dead);
        // Seen alive once, then not: dead at once.
        seen.first.insert(old.clone(), t0);
        seen.live.insert(old.clone());
        assert_eq!(seen.not_alive(&old, t0), MemberState::Dead);
    }
}
