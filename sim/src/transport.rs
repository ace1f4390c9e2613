//! chitchat's [`Transport`] and [`Socket`] over the simulated network
//! ([`crate::net::Network`]): each message is queued at its simulated
//! delivery time and handed to the receiver's mailbox when it is due.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use crate::addr::node_index;
use crate::net::{Mailbox, Packet};
use crate::world::{Shared, lock};

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
/// (see [`crate::addr::node_ip`]), the address itself otherwise.
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
