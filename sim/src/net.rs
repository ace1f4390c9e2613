//! The simulated network's state: links (delay, jitter, loss, reordering),
//! partitions, the nodes' mailboxes and the queue of datagrams ordered by
//! simulated delivery time. chitchat's `Transport` over it is in
//! [`crate::transport`].
//!
//! Messages travel as the `ChitchatMessage` values chitchat handed to the
//! socket; their size is chitchat's own `serialized_len()`, the exact number
//! of bytes the wire would carry. Encoding and decoding every message cost a
//! quarter of a simulation's time and change nothing: chitchat's encoding
//! round-trips exactly (`Delta` even stores its encoded length). With
//! [`LinkConfig::wire_check`] every message is also encoded, decoded and
//! compared with the original, and the length checked. That run's trace
//! differs from a plain one (still deterministic): decoding a `Delta` builds
//! a `HashSet`, and every new `RandomState` advances this thread's std hash
//! keys, which chitchat's peer choice (a `HashSet` walk) depends on. The
//! same holds for any `HashMap` the simulator or the model creates.
//!
//! Per-link delay, jitter, loss, reordering and partitions are drawn from
//! the network's own seeded [`SimRng`]. Delivery happens in one task
//! ([`crate::transport::deliver_forever`]) that pops the queue in `(time, sequence)` order, so
//! two messages due at the same instant are always delivered in the order
//! they were sent.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use chitchat::ChitchatMessage;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::rng::SimRng;

/// Link behaviour, the same for every link; each link draws its own base
/// delay once from `[delay_min, delay_max]`.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub delay_min: Duration,
    pub delay_max: Duration,
    /// Added per message, uniform in `[0, jitter]`.
    pub jitter: Duration,
    /// Probability that a message is lost, on every link, all the time.
    pub loss: f64,
    /// Probability that a message is held back by up to `reorder_delay`
    /// more, so that later messages overtake it.
    pub reorder: f64,
    pub reorder_delay: Duration,
    /// Datagrams queued at a receiver before further ones are dropped (a
    /// socket buffer).
    pub mailbox_capacity: usize,
    /// Encode and decode every message and check that the copy equals the
    /// original (slower, and a different trace: see the module docs).
    pub wire_check: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay_min: Duration::from_micros(500),
            delay_max: Duration::from_millis(20),
            jitter: Duration::from_millis(2),
            loss: 0.0,
            reorder: 0.01,
            reorder_delay: Duration::from_millis(30),
            mailbox_capacity: 1024,
            wire_check: false,
        }
    }
}

/// A partition: messages from side `a` to side `b` are dropped, and from
/// `b` to `a` too unless it is one-way.
#[derive(Debug, Clone)]
pub struct Cut {
    pub a: BTreeSet<IpAddr>,
    pub b: BTreeSet<IpAddr>,
    pub one_way: bool,
}

impl Cut {
    fn blocks(&self, from: IpAddr, to: IpAddr) -> bool {
        (self.a.contains(&from) && self.b.contains(&to))
            || (!self.one_way && self.b.contains(&from) && self.a.contains(&to))
    }
}

/// Message and byte counts for one simulation.
#[derive(Debug, Clone, Default)]
pub struct NetStats {
    pub sent: u64,
    pub sent_bytes: u64,
    pub delivered: u64,
    pub delivered_bytes: u64,
    pub largest: usize,
    pub dropped_loss: u64,
    pub dropped_cut: u64,
    pub dropped_down: u64,
    pub dropped_full: u64,
    pub reordered: u64,
}

impl NetStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_cut + self.dropped_down + self.dropped_full
    }
}

pub(crate) struct Mailbox {
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<(SocketAddr, ChitchatMessage)>,
}

pub(crate) struct Packet {
    pub(crate) from: SocketAddr,
    pub(crate) to: SocketAddr,
    pub(crate) message: ChitchatMessage,
    /// Encoded size.
    pub(crate) len: usize,
}

/// The network's state; lives inside the [`crate::world::World`].
pub(crate) struct Network {
    pub(crate) rng: SimRng,
    pub(crate) config: LinkConfig,
    link_delay: BTreeMap<(IpAddr, IpAddr), Duration>,
    /// Loss added to `config.loss` during a loss episode.
    pub(crate) extra_loss: f64,
    pub(crate) cuts: Vec<Cut>,
    pub(crate) mailboxes: BTreeMap<SocketAddr, Mailbox>,
    pub(crate) next_mailbox_id: u64,
    pub(crate) queue: BTreeMap<(Instant, u64), Packet>,
    pub(crate) next_seq: u64,
    pub(crate) stats: NetStats,
}

impl Network {
    pub(crate) fn new(rng: SimRng, config: LinkConfig) -> Self {
        Self {
            rng,
            config,
            link_delay: BTreeMap::new(),
            extra_loss: 0.0,
            cuts: Vec::new(),
            mailboxes: BTreeMap::new(),
            next_mailbox_id: 0,
            queue: BTreeMap::new(),
            next_seq: 0,
            stats: NetStats::default(),
        }
    }

    /// Whether a message from `from` to `to` would pass the partitions.
    pub(crate) fn passes(&self, from: IpAddr, to: IpAddr) -> bool {
        !self.cuts.iter().any(|cut| cut.blocks(from, to))
    }

    /// Unbinds `addr` as a crash does: queued and future messages to it are
    /// dropped. A later `open` of the same address gets a fresh mailbox.
    pub(crate) fn close(&mut self, addr: SocketAddr) {
        self.mailboxes.remove(&addr);
    }

    pub(crate) fn base_delay(&mut self, a: IpAddr, b: IpAddr) -> Duration {
        let key = if a <= b { (a, b) } else { (b, a) };
        let (lo, hi) = (self.config.delay_min, self.config.delay_max);
        let rng = &mut self.rng;
        *self
            .link_delay
            .entry(key)
            .or_insert_with(|| rng.duration_between(lo, hi))
    }

    /// One message of the site layer from `from` to `to`: its delay, or why
    /// it is lost (`"cut"`, `"loss"`). Same links, delays and loss as
    /// chitchat's datagrams; the draws come from the caller's generator.
    pub(crate) fn site_link(
        &mut self,
        from: IpAddr,
        to: IpAddr,
        rng: &mut SimRng,
    ) -> Result<Duration, &'static str> {
        if !self.passes(from, to) {
            return Err("cut");
        }
        let loss = (self.config.loss + self.extra_loss).min(1.0);
        if rng.chance(loss) {
            return Err("lost");
        }
        let base = self.base_delay(from, to);
        Ok(base + rng.duration_between(Duration::ZERO, self.config.jitter))
    }

    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.queue.keys().next().map(|&(at, _)| at)
    }
}
