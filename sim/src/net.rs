//! The simulated network: chitchat's [`Transport`] and [`Socket`] over an
//! in-memory queue of serialized datagrams, ordered by simulated delivery
//! time.
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
//! ([`deliver_forever`]) that pops the queue in `(time, sequence)` order, so
//! two messages due at the same instant are always delivered in the order
//! they were sent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::node::node_index;
use crate::rng::SimRng;
use crate::world::{Shared, lock};

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

struct Mailbox {
    id: u64,
    tx: mpsc::Sender<(SocketAddr, ChitchatMessage)>,
}

struct Packet {
    from: SocketAddr,
    to: SocketAddr,
    message: ChitchatMessage,
    /// Encoded size.
    len: usize,
}

/// The network's state; lives inside the [`crate::world::World`].
pub(crate) struct Network {
    rng: SimRng,
    config: LinkConfig,
    link_delay: BTreeMap<(IpAddr, IpAddr), Duration>,
    /// Loss added to `config.loss` during a loss episode.
    pub(crate) extra_loss: f64,
    pub(crate) cuts: Vec<Cut>,
    mailboxes: BTreeMap<SocketAddr, Mailbox>,
    next_mailbox_id: u64,
    queue: BTreeMap<(Instant, u64), Packet>,
    next_seq: u64,
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

    fn base_delay(&mut self, a: IpAddr, b: IpAddr) -> Duration {
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

fn kind(message: &ChitchatMessage) -> &'static str {
    match message {
        ChitchatMessage::Syn { .. } => "syn",
        ChitchatMessage::SynAck { .. } => "synack",
        ChitchatMessage::Ack { .. } => "ack",
        ChitchatMessage::BadCluster => "badcluster",
    }
}

/// chitchat's transport for one simulation. Cheap to clone.
#[derive(Clone)]
pub struct SimTransport {
    world: Shared,
    wake: Arc<Notify>,
}

impl fmt::Debug for SimTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimTransport").finish_non_exhaustive()
    }
}

impl SimTransport {
    pub(crate) fn new(world: Shared, wake: Arc<Notify>) -> Self {
        Self { world, wake }
    }

    fn open_now(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let mut world = lock(&self.world);
        let net = &mut world.net;
        if net.mailboxes.contains_key(&listen_addr) {
            bail!("address {listen_addr} is already bound");
        }
        let (tx, rx) = mpsc::channel(net.config.mailbox_capacity);
        let id = net.next_mailbox_id;
        net.next_mailbox_id += 1;
        net.mailboxes.insert(listen_addr, Mailbox { id, tx });
        Ok(Box::new(SimSocket {
            addr: listen_addr,
            mailbox_id: id,
            transport: self.clone(),
            rx,
        }))
    }

    fn send_now(&self, from: SocketAddr, to: SocketAddr, message: ChitchatMessage) {
        let len = message.serialized_len();
        let kind = kind(&message);
        let mut guard = lock(&self.world);
        let world = &mut *guard;
        let at = world.elapsed();
        let net = &mut world.net;
        if net.config.wire_check {
            check_wire(&message, len);
        }
        net.stats.sent += 1;
        net.stats.sent_bytes += len as u64;
        net.stats.largest = net.stats.largest.max(len);
        let (src, dst) = (Peer(from), Peer(to));
        if !net.passes(from.ip(), to.ip()) {
            net.stats.dropped_cut += 1;
            world
                .trace
                .record(at, format_args!("drop cut {src}>{dst} {kind} {len}"));
            return;
        }
        let loss = (net.config.loss + net.extra_loss).min(1.0);
        if net.rng.chance(loss) {
            net.stats.dropped_loss += 1;
            world
                .trace
                .record(at, format_args!("drop loss {src}>{dst} {kind} {len}"));
            return;
        }
        let mut delay = net.base_delay(from.ip(), to.ip());
        let jitter = net.config.jitter;
        delay += net.rng.duration_between(Duration::ZERO, jitter);
        if net.rng.chance(net.config.reorder) {
            net.stats.reordered += 1;
            let extra = net.config.reorder_delay;
            delay += net.rng.duration_between(Duration::ZERO, extra);
        }
        let seq = net.next_seq;
        net.next_seq += 1;
        let due = Instant::now() + delay;
        let was_first = net.next_due().is_none_or(|first| due < first);
        net.queue.insert(
            (due, seq),
            Packet {
                from,
                to,
                message,
                len,
            },
        );
        drop(guard);
        if was_first {
            self.wake.notify_one();
        }
    }

    /// Delivers every message due at or before the current simulated time.
    fn deliver_due(&self) {
        let now = Instant::now();
        let mut guard = lock(&self.world);
        let world = &mut *guard;
        let at = world.elapsed();
        loop {
            let net = &mut world.net;
            let Some(entry) = net.queue.first_entry() else {
                break;
            };
            if entry.key().0 > now {
                break;
            }
            let packet = entry.remove();
            let (src, dst) = (Peer(packet.from), Peer(packet.to));
            let (kind, len) = (kind(&packet.message), packet.len);
            if !net.passes(packet.from.ip(), packet.to.ip()) {
                net.stats.dropped_cut += 1;
                world
                    .trace
                    .record(at, format_args!("drop cut {src}>{dst} {kind} {len}"));
                continue;
            }
            let Some(mailbox) = net.mailboxes.get(&packet.to) else {
                net.stats.dropped_down += 1;
                world
                    .trace
                    .record(at, format_args!("drop down {src}>{dst} {kind} {len}"));
                continue;
            };
            match mailbox.tx.try_send((packet.from, packet.message)) {
                Ok(()) => {
                    net.stats.delivered += 1;
                    net.stats.delivered_bytes += len as u64;
                    world
                        .trace
                        .record(at, format_args!("recv {src}>{dst} {kind} {len}"));
                }
                Err(_) => {
                    net.stats.dropped_full += 1;
                    world
                        .trace
                        .record(at, format_args!("drop full {src}>{dst} {kind} {len}"));
                }
            }
        }
    }
}

/// Encodes `message`, decodes the bytes and checks that the copy equals the
/// original and that `serialized_len` told the truth. A failure is a bug in
/// chitchat's encoding (or in this crate's assumption that it round-trips).
fn check_wire(message: &ChitchatMessage, len: usize) {
    let mut bytes = Vec::with_capacity(len);
    message.serialize(&mut bytes);
    assert_eq!(bytes.len(), len, "serialized_len disagrees with serialize");
    let copy = match ChitchatMessage::deserialize(&mut &bytes[..]) {
        Ok(copy) => copy,
        Err(err) => panic!("cannot decode a message of {len} bytes just encoded: {err:#}"),
    };
    assert!(copy == *message, "a message changed through encoding");
}

/// A node's address as the trace prints it: `n3` for the simulated node 3
/// (see [`crate::node::node_ip`]), the address itself otherwise.
struct Peer(SocketAddr);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match node_index(self.0) {
            Some(index) => write!(f, "n{index}"),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Runs the network: delivers each queued message at its simulated time.
/// Never returns; the simulation drops it with the runtime.
pub(crate) async fn deliver_forever(transport: SimTransport) {
    loop {
        transport.deliver_due();
        let next = lock(&transport.world).net.next_due();
        match next {
            Some(due) => {
                tokio::select! {
                    biased;
                    () = transport.wake.notified() => {}
                    () = tokio::time::sleep_until(due) => {}
                }
            }
            None => transport.wake.notified().await,
        }
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

// The traits are declared with `#[async_trait]`; these are the signatures
// it expands to, written out so the simulator needs no macro crate.
impl Transport for SimTransport {
    fn open<'life0, 'async_trait>(
        &'life0 self,
        listen_addr: SocketAddr,
    ) -> BoxFuture<'async_trait, anyhow::Result<Box<dyn Socket>>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move { self.open_now(listen_addr) })
    }
}

/// One node's bound address.
struct SimSocket {
    addr: SocketAddr,
    mailbox_id: u64,
    transport: SimTransport,
    rx: mpsc::Receiver<(SocketAddr, ChitchatMessage)>,
}

impl Socket for SimSocket {
    fn send<'life0, 'async_trait>(
        &'life0 mut self,
        to: SocketAddr,
        msg: ChitchatMessage,
    ) -> BoxFuture<'async_trait, anyhow::Result<()>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.transport.send_now(self.addr, to, msg);
            Ok(())
        })
    }

    fn recv<'life0, 'async_trait>(
        &'life0 mut self,
    ) -> BoxFuture<'async_trait, anyhow::Result<(SocketAddr, ChitchatMessage)>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            match self.rx.recv().await {
                Some(received) => Ok(received),
                None => bail!("socket {} was closed", self.addr),
            }
        })
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        let mut world = lock(&self.transport.world);
        let net = &mut world.net;
        // A restarted node may already have bound the address again.
        if net
            .mailboxes
            .get(&self.addr)
            .is_some_and(|m| m.id == self.mailbox_id)
        {
            net.mailboxes.remove(&self.addr);
        }
    }
}
