//! One simulation: configuration, the fault schedule, the run loop and its
//! report.
//!
//! The run loop is the runtime's main future. It sleeps on the paused clock
//! until the next action of its timeline (a fault, a restart, a heal, an
//! invariant check, the end); while it sleeps, tokio auto-advances the
//! clock from timer to timer, so a simulated minute costs only the work
//! done in it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chitchat::FailureDetectorConfig;
use model::GossipSettings;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::entropy;
use crate::net::{Cut, LinkConfig, NetStats, Network};
use crate::node::{NodeContext, SimNode, node_ip};
use crate::rng::SimRng;
use crate::sites::{SiteEvent, SiteLayer, SiteSettings, SiteStats};
use crate::trace::Trace;
use crate::transport::{SimTransport, deliver_forever};
use crate::world::{
    Bounds, Departure, DepartureKind, Membership, Shared, Short, Violation, World, lock,
};

/// Which faults the simulation injects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Abort a node's chitchat; it restarts later as a new generation.
    pub crash: bool,
    /// Shut a node down for good.
    pub leave: bool,
    /// Cut the nodes into two sides: both ways, or one way in either
    /// direction (the smaller side unheard, or the smaller side deaf).
    pub partition: bool,
    /// Cut two sides apart both ways while a few bridge nodes keep
    /// talking to both (A hears B, B hears C, A does not hear C).
    pub bridge: bool,
    /// Lose a share of all messages for a while.
    pub loss: bool,
}

impl Faults {
    pub const ALL: Faults = Faults {
        crash: true,
        leave: true,
        partition: true,
        bridge: true,
        loss: true,
    };

    pub fn any(&self) -> bool {
        self.crash || self.leave || self.partition || self.bridge || self.loss
    }
}

impl FromStr for Faults {
    type Err = anyhow::Error;

    /// `crash,partition,bridge,loss,leave`, `all` or `none`.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let mut faults = Faults::default();
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "crash" => faults.crash = true,
                "leave" => faults.leave = true,
                "partition" => faults.partition = true,
                "bridge" => faults.bridge = true,
                "loss" => faults.loss = true,
                "all" => faults = Faults::ALL,
                "none" => {}
                other => bail!(
                    "unknown fault '{other}': expected crash, leave, partition, bridge, loss, all or none"
                ),
            }
        }
        Ok(faults)
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.crash, "crash"),
            (self.partition, "partition"),
            (self.bridge, "bridge"),
            (self.loss, "loss"),
            (self.leave, "leave"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// Everything a simulation depends on. Same config ⇒ same trace.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    /// The sites, their clients and the site layer's settings
    /// (`site.sites == 0`: membership only).
    pub site: SiteSettings,
    pub duration: Duration,
    /// Gossip timing: the daemon's own settings, so the simulator runs
    /// what production runs.
    pub gossip: GossipSettings,
    /// Replaces the failure detector's prior
    /// ([`GossipSettings::initial_interval`]), for experiments only.
    pub fd_initial_interval: Option<Duration>,
    pub faults: Faults,
    /// Mean time between two fault starts.
    pub fault_gap: Duration,
    /// A crashed node's downtime, a partition's or loss episode's length:
    /// uniform in this range.
    pub fault_length: (Duration, Duration),
    /// The loss rate of a loss episode: uniform in this range.
    pub episode_loss: (f64, f64),
    pub link: LinkConfig,
    /// `None`: derived from the gossip interval ([`SimConfig::bounds`]).
    pub suspect_bound: Option<Duration>,
    pub converge_bound: Option<Duration>,
    /// Also write the trace to this file.
    pub trace_path: Option<PathBuf>,
}

impl SimConfig {
    pub fn new(seed: u64, nodes: usize, duration: Duration) -> Self {
        Self {
            seed,
            nodes,
            site: SiteSettings::default(),
            duration,
            gossip: GossipSettings::default(),
            fd_initial_interval: None,
            faults: Faults::default(),
            fault_gap: Duration::from_secs(4),
            fault_length: (Duration::from_secs(2), Duration::from_secs(10)),
            episode_loss: (0.01, 0.05),
            link: LinkConfig::default(),
            suspect_bound: None,
            converge_bound: None,
            trace_path: None,
        }
    }

    /// chitchat's failure detector as the daemon configures it from
    /// [`GossipSettings`] (`gossip::Gossip::start` builds the same struct;
    /// keep the two in step).
    pub fn failure_detector(&self) -> FailureDetectorConfig {
        FailureDetectorConfig {
            phi_threshold: self.gossip.phi_threshold,
            initial_interval: self
                .fd_initial_interval
                .unwrap_or_else(|| self.gossip.initial_interval()),
            dead_node_grace_period: self.gossip.dead_node_grace,
            ..FailureDetectorConfig::default()
        }
    }

    /// The invariants' bounds: given ones, or ones derived from the gossip
    /// interval and the failure detector.
    ///
    /// Convergence must allow for chitchat 0.11's "zombies": a node that
    /// first hears of a dead node (after a heal, or when it restarts) from
    /// stale gossip starts a fresh sampling window whose mean is dominated by
    /// the prior (`initial_interval`, weight 5), and keeps that node live for
    /// up to about `phi_threshold × initial_interval` (≈ 2–3 s with the
    /// production settings, ≈ 34–41 s with chitchat's own 5 s prior).
    pub fn bounds(&self) -> Bounds {
        let interval = self.gossip.interval;
        let fd = self.failure_detector();
        let zombie = fd.initial_interval.mul_f64(1.5 * fd.phi_threshold.max(0.0));
        Bounds {
            suspect: self
                .suspect_bound
                .unwrap_or(Duration::from_secs(10) + interval * 20),
            converge: self
                .converge_bound
                .unwrap_or(zombie.max(Duration::from_secs(10)) + interval * 20),
        }
    }

    /// When faults may start and by when every one is healed: after the
    /// cluster formed, and leaving a quiet tail before the end. A run does
    /// not end before its views converged after the last fault or the
    /// convergence bound expired (so the invariant is always checked).
    pub fn fault_window(&self) -> (Duration, Duration) {
        let start = (self.gossip.interval * 10).max(Duration::from_secs(5));
        let tail = (self.gossip.interval * 25).max(Duration::from_secs(10));
        let end = self.duration.saturating_sub(tail);
        (start, end.max(start))
    }
}

/// Faults injected, by kind.
#[derive(Debug, Clone, Default)]
pub struct FaultCounts {
    pub crashes: u64,
    pub restarts: u64,
    pub leaves: u64,
    pub partitions: u64,
    /// Of `partitions`: one-way, the smaller side unheard by the rest.
    pub unheard_partitions: u64,
    /// Of `partitions`: one-way, the smaller side deaf to the rest.
    pub deaf_partitions: u64,
    pub bridges: u64,
    pub loss_episodes: u64,
}

impl FaultCounts {
    pub fn total(&self) -> u64 {
        self.crashes + self.leaves + self.partitions + self.bridges + self.loss_episodes
    }
}

/// What a simulation did.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub nodes: usize,
    pub sites: usize,
    pub simulated: Duration,
    pub net: NetStats,
    pub faults: FaultCounts,
    pub departures: Vec<Departure>,
    pub heal_convergence: Vec<Duration>,
    /// Per failover: from the crash of a node serving a site as master
    /// until a node (a new master, or the same one back) serves it again.
    pub failover: Vec<Duration>,
    /// Per incremental pull: from the master taking the oldest snapshot
    /// the replica lacked until the replica holds it (what the daemon's
    /// lag figure reports just before a pull completes).
    pub replication_lag: Vec<Duration>,
    pub site_stats: SiteStats,
    pub trace_hash: u64,
    pub trace_lines: u64,
    /// Bytes the simulation's thread drew through `getrandom` (zero when
    /// the executable does not define the shim).
    pub entropy_bytes: u64,
    pub violation: Option<Violation>,
    /// The trace's last lines, up to the violation; empty when every
    /// invariant held.
    pub trace_tail: Vec<String>,
}

impl Report {
    /// Detection times of crashes, sorted.
    pub fn crash_detection(&self) -> Vec<Duration> {
        self.detection(DepartureKind::Crash)
    }

    pub fn leave_detection(&self) -> Vec<Duration> {
        self.detection(DepartureKind::Leave)
    }

    fn detection(&self, kind: DepartureKind) -> Vec<Duration> {
        let mut times: Vec<Duration> = self
            .departures
            .iter()
            .filter(|d| d.kind == kind)
            .filter_map(|d| d.detected_after)
            .collect();
        times.sort();
        times
    }

    /// Departures no live node set had dropped by the end of the run.
    pub fn undetected(&self) -> usize {
        self.departures
            .iter()
            .filter(|d| d.detected_after.is_none())
            .count()
    }
}

/// Runs one simulation on a fresh OS thread whose entropy is seeded from
/// `config.seed` (see [`crate::entropy`]).
pub fn run_on_fresh_thread(config: SimConfig) -> anyhow::Result<Report> {
    let seed = config.seed;
    std::thread::Builder::new()
        .name(format!("sim-{seed}"))
        .spawn(move || {
            // First thing on the thread: before any HashMap or RNG exists.
            entropy::install(seed);
            run(&config)
        })
        .context("cannot spawn the simulation thread")?
        .join()
        .map_err(|_| anyhow!("the simulation of seed {seed} panicked"))?
}

/// Runs one simulation on the current thread. Deterministic only on a
/// fresh thread with [`entropy::install`] called first, in an executable
/// that defines the `getrandom` shim; use [`run_on_fresh_thread`].
pub fn run(config: &SimConfig) -> anyhow::Result<Report> {
    if config.nodes == 0 {
        bail!("a simulation needs at least one node");
    }
    if config.gossip.interval.is_zero() {
        bail!("the gossip interval must be positive");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .context("cannot build the simulation runtime")?;
    let report = runtime.block_on(async {
        let simulation = Simulation::new(config.clone())?;
        simulation.run().await
    });
    // Dropping the runtime drops every task; sockets lock the world as they
    // go, which is free by now.
    drop(runtime);
    report
}

#[derive(Debug, Clone)]
enum Action {
    Check,
    Fault,
    Restart(usize),
    Heal,
    LossEnd,
    End,
    Site(SiteEvent),
}

struct Simulation {
    config: SimConfig,
    start: Instant,
    world: Shared,
    ctx: NodeContext,
    rng: SimRng,
    nodes: Vec<SimNode>,
    timeline: BTreeMap<(Duration, u64), Action>,
    next_action: u64,
    counts: FaultCounts,
    partitioned: bool,
    lossy: bool,
    window: (Duration, Duration),
    sites: SiteLayer,
}

impl Simulation {
    fn new(config: SimConfig) -> anyhow::Result<Self> {
        let start = Instant::now();
        let trace = match &config.trace_path {
            Some(path) => Trace::to_file(path)?,
            None => Trace::new(),
        };
        let nodes: Vec<SimNode> = (0..config.nodes).map(SimNode::new).collect();
        let net = Network::new(SimRng::derive(config.seed, 1), config.link.clone());
        let members = Membership::new((0..config.nodes).map(node_ip).collect(), config.bounds());
        let world: Shared = Arc::new(Mutex::new(World::new(start, trace, net, members)));
        let transport = SimTransport::new(world.clone(), Arc::new(Notify::new()));
        let seeds = nodes.iter().take(3).map(|n| n.addr).collect();
        let ctx = NodeContext {
            world: world.clone(),
            transport,
            cluster_id: "ringhost-sim".to_string(),
            gossip: config.gossip.clone(),
            seeds,
            failure_detector: config.failure_detector(),
        };
        let window = config.fault_window();
        let sites = SiteLayer::new(
            config.seed,
            config.nodes,
            config.gossip.interval,
            config.site.clone(),
        );
        Ok(Self {
            sites,
            rng: SimRng::derive(config.seed, 2),
            config,
            start,
            world,
            ctx,
            nodes,
            timeline: BTreeMap::new(),
            next_action: 0,
            counts: FaultCounts::default(),
            partitioned: false,
            lossy: false,
            window,
        })
    }

    /// Puts the site layer's new events on the timeline.
    fn flush_sites(&mut self) {
        for (at, event) in std::mem::take(&mut self.sites.outbox) {
            self.schedule(at, Action::Site(event));
        }
    }

    fn schedule(&mut self, at: Duration, action: Action) {
        self.timeline.insert((at, self.next_action), action);
        self.next_action += 1;
    }

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }

    fn trace(&self, text: fmt::Arguments<'_>) {
        let mut world = lock(&self.world);
        let at = world.elapsed();
        world.trace.record(at, text);
    }

    async fn run(mut self) -> anyhow::Result<Report> {
        self.trace(format_args!(
            "start seed={} nodes={} interval={}us faults={}",
            self.config.seed,
            self.config.nodes,
            self.config.gossip.interval.as_micros(),
            self.config.faults
        ));
        tokio::spawn(deliver_forever(self.ctx.transport.clone()));
        for index in 0..self.nodes.len() {
            let id = self.nodes[index].start(&self.ctx).await?;
            self.trace(format_args!("up {}", Short(&id)));
            self.sites
                .on_up(index, id.generation_id, &self.nodes, &self.world)
                .await;
        }
        self.sites.begin(Duration::from_secs(2));
        self.flush_sites();
        let check_every = (self.config.gossip.interval / 2).min(Duration::from_millis(100));
        self.schedule(check_every, Action::Check);
        self.schedule(self.config.duration, Action::End);
        if self.config.faults.any() && self.window.0 < self.window.1 {
            let first = self.window.0 + self.gap();
            self.schedule(first, Action::Fault);
        }
        let mut violation = None;
        while let Some(((at, _), action)) = self.timeline.pop_first() {
            tokio::time::sleep_until(self.start + at).await;
            match action {
                Action::End => {
                    // Run on until the views converged after the last
                    // fault, or the check reports that they did not.
                    violation = lock(&self.world).check();
                    let pending = lock(&self.world).members.convergence_deadline();
                    let unsettled = if self.sites.enabled() {
                        self.sites.unsettled()
                    } else {
                        None
                    };
                    if violation.is_none()
                        && let Some(what) = &unsettled
                        && at > self.sites.settle_deadline()
                    {
                        let mut world = lock(&self.world);
                        let what = format!(
                            "{what} {:.3}s after the last fault event (bound {:.3}s)",
                            (at - self.sites.settle_deadline() + self.config.site.settle)
                                .as_secs_f64(),
                            self.config.site.settle.as_secs_f64()
                        );
                        world.trace.record(at, format_args!("violation {what}"));
                        violation = Some(Violation { at, what });
                    }
                    if violation.is_some() || (pending.is_none() && unsettled.is_none()) {
                        break;
                    }
                    self.schedule(at + check_every, Action::End);
                }
                Action::Check => {
                    violation = lock(&self.world).check();
                    if violation.is_some() {
                        break;
                    }
                    self.schedule(at + check_every, Action::Check);
                }
                Action::Fault => {
                    self.inject().await;
                    let next = at + self.gap();
                    if next < self.window.1 {
                        self.schedule(next, Action::Fault);
                    }
                }
                Action::Restart(index) => {
                    let id = self.nodes[index].start(&self.ctx).await?;
                    self.counts.restarts += 1;
                    self.trace(format_args!("restart {}", Short(&id)));
                    self.fault_event(false);
                    self.sites
                        .on_up(index, id.generation_id, &self.nodes, &self.world)
                        .await;
                    self.flush_sites();
                    if let Some(v) = self.sites.violation.take() {
                        violation = Some(v);
                        break;
                    }
                }
                Action::Site(event) => {
                    self.sites.handle(event, &self.nodes, &self.world).await;
                    self.flush_sites();
                    if let Some(v) = self.sites.violation.take() {
                        violation = Some(v);
                        break;
                    }
                }
                Action::Heal => {
                    {
                        let mut world = lock(&self.world);
                        world.net.cuts.clear();
                        world.cuts_changed();
                    }
                    self.partitioned = false;
                    self.sites.on_partition(at, false);
                    self.trace(format_args!("heal"));
                    self.fault_event(true);
                }
                Action::LossEnd => {
                    lock(&self.world).net.extra_loss = 0.0;
                    self.lossy = false;
                    self.trace(format_args!("loss end"));
                    self.fault_event(true);
                }
            }
        }
        let simulated = self.now();
        let mut world = lock(&self.world);
        world.trace.record(simulated, format_args!("end"));
        world.trace.finish()?;
        Ok(Report {
            seed: self.config.seed,
            nodes: self.config.nodes,
            sites: self.config.site.sites,
            simulated,
            net: world.net.stats.clone(),
            faults: self.counts.clone(),
            departures: world.members.departures.clone(),
            heal_convergence: world.members.heal_convergence.clone(),
            failover: self.sites.failover.clone(),
            replication_lag: self.sites.lag.clone(),
            site_stats: self.sites.stats.clone(),
            trace_hash: world.trace.hash(),
            trace_lines: world.trace.lines(),
            entropy_bytes: entropy::bytes_drawn(),
            trace_tail: if violation.is_some() {
                world.trace.tail()
            } else {
                Vec::new()
            },
            violation,
        })
    }

    /// Time to the next fault start: uniform in `[gap/2, 3gap/2]`.
    fn gap(&mut self) -> Duration {
        let gap = self.config.fault_gap;
        self.rng.duration_between(gap / 2, gap * 3 / 2)
    }

    /// When a fault that starts now ends, never after the fault window.
    fn fault_end(&mut self) -> Duration {
        let (lo, hi) = self.config.fault_length;
        let length = self.rng.duration_between(lo, hi);
        (self.now() + length).min(self.window.1)
    }

    fn fault_event(&mut self, heal: bool) {
        let at = self.now();
        let disturbed = self.partitioned || self.lossy;
        let heal = heal && !disturbed;
        self.sites.on_fault_event(at);
        lock(&self.world).members.fault_event(at, disturbed, heal);
    }

    /// The node indices in a random order (Fisher–Yates).
    fn shuffled(&mut self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, self.rng.index(i + 1));
        }
        order
    }

    /// Starts a partition (one at a time; [`Action::Heal`] ends it).
    fn cut(&mut self, cut: Cut) {
        {
            let mut world = lock(&self.world);
            world.net.cuts.push(cut);
            world.cuts_changed();
        }
        self.partitioned = true;
        let now = self.now();
        self.sites.on_partition(now, true);
    }

    /// Injects one fault of an enabled kind that is possible now.
    async fn inject(&mut self) {
        let faults = self.config.faults;
        let up: Vec<usize> = self
            .nodes
            .iter()
            .filter(|n| n.is_up())
            .map(|n| n.index)
            .collect();
        let gone = self.nodes.len() - up.len();
        // Keep a majority of the nodes up, and at least two.
        let may_stop = up.len() > 2 && gone < (self.nodes.len() - 1) / 2;
        let left = self.nodes.iter().filter(|n| n.has_left()).count();
        let mut kinds = Vec::new();
        if faults.crash && may_stop {
            kinds.push("crash");
        }
        if faults.leave && may_stop && left < self.nodes.len() / 4 {
            kinds.push("leave");
        }
        if faults.partition && !self.partitioned && self.nodes.len() > 1 {
            kinds.push("partition");
        }
        if faults.bridge && !self.partitioned && self.nodes.len() > 2 {
            kinds.push("bridge");
        }
        if faults.loss && !self.lossy {
            kinds.push("loss");
        }
        if kinds.is_empty() {
            return;
        }
        let kind = kinds[self.rng.index(kinds.len())];
        match kind {
            "crash" => {
                let index = up[self.rng.index(up.len())];
                if let Some(id) = self.nodes[index].crash(&self.world) {
                    self.counts.crashes += 1;
                    let mut world = lock(&self.world);
                    let at = world.elapsed();
                    world.trace.record(at, format_args!("crash {}", Short(&id)));
                    world.node_down(index, DepartureKind::Crash);
                    drop(world);
                    self.sites.on_down(index, at);
                }
                let back = self.fault_end();
                self.schedule(back, Action::Restart(index));
                self.fault_event(false);
            }
            "leave" => {
                let index = up[self.rng.index(up.len())];
                if let Some(id) = self.nodes[index].leave(&self.world).await {
                    self.counts.leaves += 1;
                    let mut world = lock(&self.world);
                    let at = world.elapsed();
                    world.trace.record(at, format_args!("leave {}", Short(&id)));
                    world.node_down(index, DepartureKind::Leave);
                    drop(world);
                    self.sites.on_down(index, at);
                }
                self.fault_event(false);
            }
            "partition" => {
                let order = self.shuffled();
                let size = 1 + self.rng.index(self.nodes.len() / 2);
                // Half two-way; the rest one-way, in either direction.
                let (one_way, deaf) = match self.rng.index(4) {
                    0 | 1 => (false, false),
                    2 => (true, false),
                    _ => (true, true),
                };
                let small: Vec<usize> = sorted(&order[..size]);
                let rest: Vec<usize> = sorted(&order[size..]);
                // A one-way cut drops what side a sends to side b.
                let (a, b) = if deaf {
                    (&rest, &small)
                } else {
                    (&small, &rest)
                };
                self.cut(Cut {
                    a: a.iter().map(|&i| node_ip(i)).collect(),
                    b: b.iter().map(|&i| node_ip(i)).collect(),
                    one_way,
                });
                self.counts.partitions += 1;
                let how = match (one_way, deaf) {
                    (false, _) => "two-way",
                    (true, false) => {
                        self.counts.unheard_partitions += 1;
                        "one-way unheard"
                    }
                    (true, true) => {
                        self.counts.deaf_partitions += 1;
                        "one-way deaf"
                    }
                };
                self.trace(format_args!("partition {how} [{}] | rest", names(&small)));
                let end = self.fault_end();
                self.schedule(end, Action::Heal);
                self.fault_event(false);
            }
            "bridge" => {
                let order = self.shuffled();
                let n = self.nodes.len();
                // One to a fifth of the nodes bridge; the rest split in two.
                let bridge = 1 + self.rng.index((n / 5).max(1));
                let rest = n - bridge;
                let size = 1 + self.rng.index((rest / 2).max(1));
                let via = sorted(&order[..bridge]);
                let side_a = sorted(&order[bridge..bridge + size]);
                let side_c = sorted(&order[bridge + size..]);
                self.cut(Cut {
                    a: side_a.iter().map(|&i| node_ip(i)).collect(),
                    b: side_c.iter().map(|&i| node_ip(i)).collect(),
                    one_way: false,
                });
                self.counts.bridges += 1;
                self.trace(format_args!(
                    "bridge [{}] | [{}] | rest",
                    names(&via),
                    names(&side_a)
                ));
                let end = self.fault_end();
                self.schedule(end, Action::Heal);
                self.fault_event(false);
            }
            "loss" => {
                let (lo, hi) = self.config.episode_loss;
                let rate = lo + (hi - lo) * self.rng.unit();
                lock(&self.world).net.extra_loss = rate;
                self.lossy = true;
                self.counts.loss_episodes += 1;
                self.trace(format_args!("loss {rate:.3}"));
                let end = self.fault_end();
                self.schedule(end, Action::LossEnd);
                self.fault_event(false);
            }
            _ => unreachable!("kinds holds only the names matched above"),
        }
    }
}

fn sorted(nodes: &[usize]) -> Vec<usize> {
    let mut v = nodes.to_vec();
    v.sort_unstable();
    v
}

/// `n3 n7 …` for a trace line.
fn names(nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(|i| format!("n{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}
