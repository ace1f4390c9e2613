//! State shared by everything inside one simulation: the clock origin, the
//! trace, the network and what every node currently believes about
//! membership, with the membership invariants checked against it.
//!
//! One `World` per simulation behind one mutex. The simulation runs on one
//! thread, so the mutex is never contended; it exists because chitchat's
//! `Transport` must be `Send + Sync`. Never hold it across an `.await`, and
//! never drop a socket while holding it (the socket's `Drop` locks it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chitchat::ChitchatId;
use tokio::time::Instant;

use crate::net::Network;
use crate::trace::Trace;

pub(crate) type Shared = Arc<Mutex<World>>;

/// Locks the world. A poisoned lock means a panic elsewhere in the
/// simulation, which already fails the run; keep going to report it.
pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, World> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) struct World {
    start: Instant,
    pub(crate) trace: Trace,
    pub(crate) net: Network,
    pub(crate) members: Membership,
}

impl World {
    pub(crate) fn new(start: Instant, trace: Trace, net: Network, members: Membership) -> Self {
        Self {
            start,
            trace,
            net,
            members,
        }
    }

    /// Simulated time since the simulation started.
    pub(crate) fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(self.start)
    }

    /// Records a new membership view of node `index` (its chitchat's live
    /// set, self included).
    pub(crate) fn on_view(&mut self, index: usize, id: &ChitchatId, live: BTreeSet<ChitchatId>) {
        let at = self.elapsed();
        let members = &mut self.members;
        let member = &mut members.members[index];
        if member.up.as_ref() != Some(id) {
            // A late report from a generation that has since crashed.
            return;
        }
        for gone in member.view.difference(&live) {
            self.trace
                .record(at, format_args!("view {} -{}", Short(id), Short(gone)));
        }
        for new in live.difference(&member.view) {
            self.trace
                .record(at, format_args!("view {} +{}", Short(id), Short(new)));
        }
        member.view = live;
        members.update_departures(at);
        if let Some(took) = members.try_converge(at) {
            self.trace.record(
                at,
                format_args!(
                    "converged {}.{:06}s after heal",
                    took.as_secs(),
                    took.subsec_micros()
                ),
            );
        }
    }

    /// Checks the membership invariants at the current simulated time.
    pub(crate) fn check(&mut self) -> Option<Violation> {
        let at = self.elapsed();
        if let Some(took) = self.members.try_converge(at) {
            self.trace.record(
                at,
                format_args!(
                    "converged {}.{:06}s after heal",
                    took.as_secs(),
                    took.subsec_micros()
                ),
            );
        }
        let violation = self.members.check(at, &self.net);
        if let Some(violation) = &violation {
            self.trace
                .record(at, format_args!("violation {}", violation.what));
        }
        violation
    }
}

/// `n3/g1`: a chitchat id as the trace prints it.
pub(crate) struct Short<'a>(pub(crate) &'a ChitchatId);

impl fmt::Display for Short<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/g{}", self.0.node_id, self.0.generation_id)
    }
}

/// A broken invariant.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Simulated time of the check that failed.
    pub at: Duration,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {:.3}s: {}", self.at.as_secs_f64(), self.what)
    }
}

/// How a node went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepartureKind {
    Crash,
    Leave,
}

/// A node that went away, and when every other live node saw it dead.
#[derive(Debug, Clone)]
pub struct Departure {
    pub kind: DepartureKind,
    pub node: usize,
    pub generation: u64,
    pub at: Duration,
    /// Time from the departure until no live node listed it as live.
    pub detected_after: Option<Duration>,
    id: ChitchatId,
}

/// Bounds of the membership invariants.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// How long a node may report a live node dead while both are up and
    /// the link between them passes both ways.
    pub suspect: Duration,
    /// How long after the last fault event (partition healed, loss ended,
    /// crash, restart, leave) the live nodes' views may take to agree.
    pub converge: Duration,
}

struct Member {
    /// The running generation's id; `None` while crashed or after leaving.
    up: Option<ChitchatId>,
    ip: IpAddr,
    view: BTreeSet<ChitchatId>,
}

pub(crate) struct Membership {
    members: Vec<Member>,
    bounds: Bounds,
    pub(crate) departures: Vec<Departure>,
    /// `(observer, subject)` → since when the observer has wrongly listed
    /// the subject as dead.
    suspects: BTreeMap<(usize, usize), Duration>,
    /// A partition or loss episode is active: views need not agree.
    disturbed: bool,
    quiet_since: Duration,
    quiet_after_heal: bool,
    quiet_converged: bool,
    /// Times from a heal until all live views agreed.
    pub(crate) heal_convergence: Vec<Duration>,
}

impl Membership {
    pub(crate) fn new(ips: Vec<IpAddr>, bounds: Bounds) -> Self {
        Self {
            members: ips
                .into_iter()
                .map(|ip| Member {
                    up: None,
                    ip,
                    view: BTreeSet::new(),
                })
                .collect(),
            bounds,
            departures: Vec::new(),
            suspects: BTreeMap::new(),
            disturbed: false,
            quiet_since: Duration::ZERO,
            quiet_after_heal: false,
            quiet_converged: false,
            heal_convergence: Vec::new(),
        }
    }

    pub(crate) fn node_up(&mut self, index: usize, id: ChitchatId) {
        let member = &mut self.members[index];
        member.up = Some(id);
        member.view.clear();
    }

    pub(crate) fn node_down(&mut self, index: usize, kind: DepartureKind, at: Duration) {
        let member = &mut self.members[index];
        let Some(id) = member.up.take() else {
            return;
        };
        member.view.clear();
        self.departures.push(Departure {
            kind,
            node: index,
            generation: id.generation_id,
            at,
            detected_after: None,
            id,
        });
        self.update_departures(at);
    }

    /// Notes a fault event: views may disagree until `converge` after the
    /// last one. `disturbed` says whether a partition or loss episode is
    /// still active; `heal` whether this event ended the last of them.
    pub(crate) fn fault_event(&mut self, at: Duration, disturbed: bool, heal: bool) {
        self.disturbed = disturbed;
        self.quiet_since = at;
        self.quiet_after_heal = heal || (self.quiet_after_heal && !self.quiet_converged);
        self.quiet_converged = false;
    }

    fn update_departures(&mut self, at: Duration) {
        for departure in &mut self.departures {
            if departure.detected_after.is_some() {
                continue;
            }
            let seen_dead_by_all = self
                .members
                .iter()
                .filter(|m| m.up.is_some())
                .all(|m| !m.view.contains(&departure.id));
            if seen_dead_by_all {
                departure.detected_after = Some(at - departure.at);
            }
        }
    }

    /// While the last quiet period has not converged: by when it must.
    pub(crate) fn convergence_deadline(&self) -> Option<Duration> {
        (!self.quiet_converged).then_some(self.quiet_since + self.bounds.converge)
    }

    /// Whether every live node lists exactly the live nodes as live.
    fn converged(&self) -> bool {
        let expected: BTreeSet<&ChitchatId> =
            self.members.iter().filter_map(|m| m.up.as_ref()).collect();
        self.members.iter().filter(|m| m.up.is_some()).all(|m| {
            m.view.len() == expected.len() && m.view.iter().all(|id| expected.contains(id))
        })
    }

    /// Marks the current quiet period converged if it is; returns the time
    /// it took when the period began with a heal.
    fn try_converge(&mut self, at: Duration) -> Option<Duration> {
        if self.disturbed || self.quiet_converged || !self.converged() {
            return None;
        }
        self.quiet_converged = true;
        if self.quiet_after_heal {
            let took = at - self.quiet_since;
            self.heal_convergence.push(took);
            return Some(took);
        }
        None
    }

    fn check(&mut self, at: Duration, net: &Network) -> Option<Violation> {
        let mut suspects = BTreeMap::new();
        let mut worst: Option<((usize, usize), Duration)> = None;
        for (o, observer) in self.members.iter().enumerate() {
            if observer.up.is_none() {
                continue;
            }
            for (s, subject) in self.members.iter().enumerate() {
                let Some(subject_id) = &subject.up else {
                    continue;
                };
                if o == s
                    || observer.view.contains(subject_id)
                    || !net.passes(observer.ip, subject.ip)
                    || !net.passes(subject.ip, observer.ip)
                {
                    continue;
                }
                let since = self.suspects.get(&(o, s)).copied().unwrap_or(at);
                suspects.insert((o, s), since);
                if at - since > self.bounds.suspect && worst.is_none_or(|(_, w)| since < w) {
                    worst = Some(((o, s), since));
                }
            }
        }
        self.suspects = suspects;
        if let Some(((o, s), since)) = worst {
            let (observer, subject) = (&self.members[o], &self.members[s]);
            let (Some(observer_id), Some(subject_id)) = (&observer.up, &subject.up) else {
                unreachable!("suspects are only recorded between live nodes");
            };
            return Some(Violation {
                at,
                what: format!(
                    "{} has reported {} dead for {:.3}s (bound {:.3}s) although both are up \
                     and the link between them passes both ways",
                    Short(observer_id),
                    Short(subject_id),
                    (at - since).as_secs_f64(),
                    self.bounds.suspect.as_secs_f64(),
                ),
            });
        }
        if !self.disturbed && !self.quiet_converged && at - self.quiet_since > self.bounds.converge
        {
            return Some(Violation {
                at,
                what: format!(
                    "views have not converged {:.3}s after the last fault event (bound {:.3}s): {}",
                    (at - self.quiet_since).as_secs_f64(),
                    self.bounds.converge.as_secs_f64(),
                    self.first_disagreement(),
                ),
            });
        }
        None
    }

    fn first_disagreement(&self) -> String {
        let expected: BTreeSet<&ChitchatId> =
            self.members.iter().filter_map(|m| m.up.as_ref()).collect();
        for member in &self.members {
            let Some(id) = &member.up else { continue };
            let view: BTreeSet<&ChitchatId> = member.view.iter().collect();
            let missing: Vec<String> = expected
                .difference(&view)
                .map(|i| Short(i).to_string())
                .collect();
            let extra: Vec<String> = view
                .difference(&expected)
                .map(|i| Short(i).to_string())
                .collect();
            if !missing.is_empty() || !extra.is_empty() {
                return format!(
                    "{} misses [{}] and lists as live [{}]",
                    Short(id),
                    missing.join(" "),
                    extra.join(" ")
                );
            }
        }
        "no disagreement".to_string()
    }
}
