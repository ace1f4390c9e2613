//! One simulated node: a name, an address and, while it runs, a generation
//! of real chitchat on the simulated network, configured exactly as the
//! daemon configures it (from [`model::GossipSettings`]).
//!
//! The node is the unit the simulator crashes, restarts and drives. Its
//! parts split along what a crash keeps:
//!
//! - [`Running`] is memory: the chitchat instance and the tasks around it.
//!   A crash drops it (and the site layer drops the node's `model::Node`,
//!   see [`crate::sites`]).
//! - [`SimNode`]'s own fields outlive crashes: identity, address and the
//!   generation counter; the node's disk (a `MemStore` and its persisted
//!   roles) lives in the site layer and survives too.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, spawn_chitchat};
use model::GossipSettings;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use crate::addr::{GOSSIP_PORT, node_index, node_ip};
use crate::transport::SimTransport;
use crate::world::{Shared, lock};

/// gossip's `node:left` key.
pub(crate) const LEFT_KEY: &str = "node:left";

/// What every node of one simulation shares to start chitchat.
#[derive(Clone)]
pub(crate) struct NodeContext {
    pub(crate) world: Shared,
    pub(crate) transport: SimTransport,
    pub(crate) cluster_id: String,
    pub(crate) gossip: GossipSettings,
    pub(crate) seeds: Vec<SocketAddr>,
    pub(crate) failure_detector: FailureDetectorConfig,
}

/// A running generation: everything a crash loses.
struct Running {
    id: ChitchatId,
    chitchat: ChitchatHandle,
    observer: JoinHandle<()>,
}

enum State {
    /// Not started yet, or crashed.
    Down,
    /// Left the cluster for good.
    Left,
    Up(Running),
}

pub struct SimNode {
    pub index: usize,
    pub name: Arc<str>,
    pub addr: SocketAddr,
    /// The generation of the running (or last) chitchat instance; each
    /// start uses the next one.
    generation: Option<u64>,
    state: State,
}

impl fmt::Debug for SimNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Down => "down",
            State::Left => "left",
            State::Up(_) => "up",
        };
        f.debug_struct("SimNode")
            .field("name", &self.name)
            .field("addr", &self.addr)
            .field("generation", &self.generation)
            .field("state", &state)
            .finish()
    }
}

impl SimNode {
    pub fn new(index: usize) -> Self {
        Self {
            index,
            name: format!("n{index}").into(),
            addr: SocketAddr::new(node_ip(index), GOSSIP_PORT),
            generation: None,
            state: State::Down,
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up(_))
    }

    pub fn has_left(&self) -> bool {
        matches!(self.state, State::Left)
    }

    /// The running generation's id.
    pub fn id(&self) -> Option<&ChitchatId> {
        match &self.state {
            State::Up(running) => Some(&running.id),
            _ => None,
        }
    }

    /// The running chitchat instance, for publishing keys and reading state.
    pub fn chitchat(&self) -> Option<&ChitchatHandle> {
        match &self.state {
            State::Up(running) => Some(&running.chitchat),
            _ => None,
        }
    }

    /// Starts the next generation. The node must be down.
    pub(crate) async fn start(&mut self, ctx: &NodeContext) -> anyhow::Result<ChitchatId> {
        assert!(
            matches!(self.state, State::Down),
            "only a down node can start"
        );
        let generation = self.generation.map_or(0, |g| g + 1);
        self.generation = Some(generation);
        let id = ChitchatId::new(self.name.clone(), generation, self.addr);
        let config = ChitchatConfig {
            chitchat_id: id.clone(),
            cluster_id: ctx.cluster_id.clone(),
            gossip_interval: ctx.gossip.interval,
            listen_addr: self.addr,
            // As the daemon does: a node is never its own seed.
            seed_nodes: ctx
                .seeds
                .iter()
                .filter(|s| **s != self.addr)
                .map(|s| s.to_string())
                .collect(),
            failure_detector_config: ctx.failure_detector.clone(),
            marked_for_deletion_grace_period: ctx.gossip.dead_node_grace,
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        lock(&ctx.world).node_up(self.index, id.clone());
        let chitchat = spawn_chitchat(config, Vec::new(), &ctx.transport)
            .await
            .with_context(|| format!("cannot start chitchat on {}", self.name))?;
        let watcher = chitchat.chitchat().lock().await.live_nodes_watcher();
        let observer = tokio::spawn(observe(ctx.world.clone(), self.index, id.clone(), watcher));
        self.state = State::Up(Running {
            id: id.clone(),
            chitchat,
            observer,
        });
        Ok(id)
    }

    /// Crashes the node: its chitchat stops at once, mid-whatever, and its
    /// address stops receiving. Returns the id that crashed.
    pub(crate) fn crash(&mut self, world: &Shared) -> Option<ChitchatId> {
        let State::Up(running) = std::mem::replace(&mut self.state, State::Down) else {
            return None;
        };
        running.chitchat.abort();
        running.observer.abort();
        lock(world).net.close(self.addr);
        Some(running.id)
    }

    /// Stops the node for good through chitchat's own shutdown. Returns the
    /// id that left.
    pub(crate) async fn leave(&mut self, world: &Shared) -> Option<ChitchatId> {
        let State::Up(running) = std::mem::replace(&mut self.state, State::Left) else {
            return None;
        };
        running.observer.abort();
        // As `gossip::Gossip::leave`: say so first, so peers see `left`.
        running
            .chitchat
            .chitchat()
            .lock()
            .await
            .self_node_state()
            .set(LEFT_KEY, "1");
        // The server's exit status does not matter: the node is gone.
        let _ = running.chitchat.shutdown().await;
        lock(world).net.close(self.addr);
        Some(running.id)
    }
}

/// Forwards every change of a node's live set to the world.
async fn observe(
    world: Shared,
    index: usize,
    id: ChitchatId,
    mut watcher: watch::Receiver<std::collections::BTreeMap<ChitchatId, chitchat::NodeState>>,
) {
    loop {
        {
            let live = watcher.borrow_and_update();
            lock(&world).on_view(index, &id, live.keys());
        }
        if watcher.changed().await.is_err() {
            return;
        }
    }
}
