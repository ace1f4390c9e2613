//! The QUIC mesh: one endpoint per node, bound to its mesh address, used to
//! dial and to accept, so a peer's connection comes from the very address it
//! gossips (chitchat replies to the address a message came from).
//!
//! Each gossip message rides its own unidirectional stream (messages reach
//! tens of KB, more than a datagram holds). Sends never wait for the network:
//! a message goes into a small per-peer queue that a task drains, dialing
//! when needed; when the queue is full the message is dropped, as UDP would.
//!
//! Invariant: every connection in the pool completed mutual TLS with a
//! certificate from the cluster CA, and the node name in that certificate is
//! recorded against the connection's remote address ([`PeerNames`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::pki::{Identity, node_name_of};
use crate::tls;

/// Largest gossip message accepted on a stream. chitchat keeps messages
/// under 64 KiB; anything larger is a broken or hostile peer.
const MAX_MESSAGE: usize = 256 * 1024;
/// Messages waiting for one peer before new ones are dropped.
const PEER_QUEUE: usize = 32;
/// Messages received but not yet taken by chitchat.
const INBOUND_QUEUE: usize = 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed dial, messages to that peer are dropped for this long.
const DIAL_BACKOFF: Duration = Duration::from_millis(500);

/// The node name each authenticated peer address presented in its
/// certificate. Shared by the mesh (which writes it) and the view (which
/// believes a gossiped node only where its address and name agree).
#[derive(Debug, Default)]
pub struct PeerNames {
    names: Mutex<HashMap<SocketAddr, String>>,
}

impl PeerNames {
    fn record(&self, addr: SocketAddr, name: String) {
        self.names
            .lock()
            .expect("peer name lock is never poisoned: no code panics while holding it")
            .insert(addr, name);
    }

    /// The certificate name seen at `addr`, if a connection with it completed.
    pub fn get(&self, addr: &SocketAddr) -> Option<String> {
        self.names
            .lock()
            .expect("peer name lock is never poisoned: no code panics while holding it")
            .get(addr)
            .cloned()
    }
}

/// Bytes counted at the mesh, for the bandwidth figures in status.
#[derive(Debug, Default)]
pub struct Traffic {
    pub gossip_messages_sent: AtomicU64,
    pub gossip_bytes_sent: AtomicU64,
    pub gossip_messages_received: AtomicU64,
    pub gossip_bytes_received: AtomicU64,
    /// UDP payload bytes of connections that have closed; live ones are
    /// added when read.
    closed_udp_tx: AtomicU64,
    closed_udp_rx: AtomicU64,
}

/// A bidirectional stream over the mesh: bytes both ways, to or from an
/// authenticated peer. Shutting the writer down finishes the stream.
pub struct MeshStream {
    pub reader: Box<dyn tokio::io::AsyncRead + Send + Unpin>,
    pub writer: Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
}

impl std::fmt::Debug for MeshStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeshStream")
    }
}

/// A stream a peer opened to this node.
#[derive(Debug)]
pub struct IncomingStream {
    /// The node name in the peer's certificate.
    pub peer: String,
    pub addr: SocketAddr,
    pub stream: MeshStream,
}

/// Incoming streams waiting to be served.
const STREAM_QUEUE: usize = 64;

/// Gossip messages received, with the address they came from.
pub(crate) type Inbound = mpsc::Receiver<(SocketAddr, Bytes)>;

pub(crate) struct Shared {
    pub(crate) endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    pub(crate) names: Arc<PeerNames>,
    conns: Mutex<HashMap<SocketAddr, quinn::Connection>>,
    probing: Mutex<std::collections::HashSet<SocketAddr>>,
    streams: Mutex<Option<mpsc::Sender<IncomingStream>>>,
    pub(crate) traffic: Arc<Traffic>,
    inbound: mpsc::Sender<(SocketAddr, Bytes)>,
    tasks: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("local", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

/// Why the mesh could not start. Nothing is left bound.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("cannot bind mesh address {addr}/udp: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid TLS setup: {0}")]
    Tls(String),
}

fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .expect("10 s fits in a QUIC idle timeout"),
    ));
    t.max_concurrent_uni_streams(256u32.into());
    // Snapshot streams are bulk transfers: windows large enough that a
    // fast LAN (or loopback) is not held back by flow control. Not more:
    // past 2048 buffered chunks (one per datagram) quinn's reassembly
    // copies them into one new buffer. With a 16 MiB window and 6.5 KB
    // datagrams, a receiver slower than the network (a `zfs receive`) kept
    // the window full and copied every byte once more, into freshly
    // faulted pages: a quarter of its CPU. 8 MiB of large datagrams stays
    // far below (with 1472-byte ones it costs that copy again).
    t.stream_receive_window((8u32 << 20).into());
    t.receive_window((64u32 << 20).into());
    t.send_window(64 << 20);
    // Probe for larger datagrams where the path allows them (loopback,
    // jumbo frames); elsewhere probes fail and the 1472-byte payload that
    // Ethernet carries (or the 1200-byte floor) stays.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    t
}

/// The largest UDP payload the mesh sends and accepts. Per-packet work
/// (AEAD setup, header protection, frame and ACK handling, one reassembly
/// chunk each) weighs on a bulk stream's CPU, so larger packets where the
/// path carries them matter: over loopback a 200 MiB stream took 0.17–0.22 s
/// of CPU at 6500 bytes against 0.42–0.48 s at 1472.
///
/// quinn 0.11 sends up to 10 datagrams in one GSO call and the kernel
/// refuses a GSO batch above 64 KiB; [`crate::udp::BoundedGso`] splits
/// larger batches, so datagrams can be larger than 6.5 KB (before it, such
/// batches were lost and quinn fell back to 1200 bytes for a minute).
/// Loopback carries 32,000 bytes, two to a GSO call; Ethernet paths stay at
/// what MTU discovery finds (1472, or ~9000 with jumbo frames).
const MAX_UDP_PAYLOAD: u16 = 32_000;

/// Kernel socket buffers asked for the mesh's UDP socket (Linux doubles
/// the value and caps it at `net.core.rmem_max`/`wmem_max`). The 208 KiB
/// default overflows during a bulk stream over a fast path; each drop
/// costs a congestion-window cut.
const SOCKET_BUFFER: usize = 4 << 20;

impl Shared {
    /// Binds the endpoint and starts accepting. Returns the mesh and the
    /// receiver of inbound gossip messages.
    pub(crate) fn start(
        id: &Identity,
        addr: SocketAddr,
    ) -> Result<(Arc<Shared>, Inbound), MeshError> {
        let (server, client) = tls::configs(id).map_err(MeshError::Tls)?;
        let server = quinn::crypto::rustls::QuicServerConfig::try_from(server)
            .map_err(|e| MeshError::Tls(e.to_string()))?;
        let client = quinn::crypto::rustls::QuicClientConfig::try_from(client)
            .map_err(|e| MeshError::Tls(e.to_string()))?;
        let transport = Arc::new(transport_config());
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
        server.transport_config(transport.clone());
        let mut client = quinn::ClientConfig::new(Arc::new(client));
        client.transport_config(transport);

        let socket =
            std::net::UdpSocket::bind(addr).map_err(|source| MeshError::Bind { addr, source })?;
        // Best effort: smaller buffers only cost throughput.
        match quinn::udp::UdpSocketState::new((&socket).into()) {
            Ok(state) => {
                if let Err(e) = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER) {
                    debug!(error = %e, "mesh socket receive buffer unchanged");
                }
                if let Err(e) = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER) {
                    debug!(error = %e, "mesh socket send buffer unchanged");
                }
            }
            Err(e) => debug!(error = %e, "mesh socket buffers unchanged"),
        }
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(MAX_UDP_PAYLOAD)
            .expect("the payload lies within QUIC's 1200..=65527");
        let runtime = Arc::new(quinn::TokioRuntime);
        let socket = quinn::Runtime::wrap_udp_socket(&*runtime, socket)
            .map_err(|source| MeshError::Bind { addr, source })?;
        let socket = Arc::new(crate::udp::BoundedGso::new(socket, MAX_UDP_PAYLOAD.into()));
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server),
            socket,
            runtime,
        )
        .map_err(|source| MeshError::Bind { addr, source })?;
        let (inbound, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
        let shared = Arc::new(Shared {
            endpoint,
            client,
            names: Arc::default(),
            conns: Mutex::default(),
            probing: Mutex::default(),
            streams: Mutex::default(),
            traffic: Arc::default(),
            inbound,
            tasks: Mutex::new(JoinSet::new()),
        });
        let accept = shared.clone();
        shared.spawn(async move { accept.accept_loop().await });
        Ok((shared, inbound_rx))
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().expect("task lock is never poisoned");
        // Reap finished tasks so the set stays as small as what runs.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(fut);
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let me = self.clone();
            self.spawn(async move {
                let remote = incoming.remote_address();
                let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
                    incoming.accept().map_err(|e| e.to_string())?.await.map_err(|e| e.to_string())
                })
                .await;
                match result {
                    Ok(Ok(conn)) => {
                        me.adopt(conn, "accepted");
                    }
                    Ok(Err(e)) => {
                        warn!(peer = %remote, error = %e, "rejected mesh connection (handshake failed: no valid cluster certificate)");
                    }
                    Err(_) => warn!(peer = %remote, "rejected mesh connection (handshake timed out)"),
                }
            });
        }
    }

    /// Records the peer's certificate name, pools the connection and reads
    /// its gossip streams.
    fn adopt(self: &Arc<Self>, conn: quinn::Connection, how: &str) -> Option<()> {
        let remote = conn.remote_address();
        let name = conn
            .peer_identity()
            .and_then(|any| {
                any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|chain| chain.first().and_then(node_name_of));
        let Some(name) = name else {
            warn!(peer = %remote, "rejected mesh connection: certificate names no node");
            conn.close(1u32.into(), b"certificate names no node");
            return None;
        };
        debug!(peer = %remote, node = %name, how, "mesh connection up");
        self.names.record(remote, name.clone());
        let old = self
            .conns
            .lock()
            .expect("conn lock is never poisoned")
            .insert(remote, conn.clone());
        if let Some(old) = old
            && old.stable_id() != conn.stable_id()
        {
            self.account_closed(&old);
        }
        let me = self.clone();
        self.spawn(async move { me.read_streams(conn, name).await });
        Some(())
    }

    fn account_closed(&self, conn: &quinn::Connection) {
        let s = conn.stats();
        self.traffic
            .closed_udp_tx
            .fetch_add(s.udp_tx.bytes, Ordering::Relaxed);
        self.traffic
            .closed_udp_rx
            .fetch_add(s.udp_rx.bytes, Ordering::Relaxed);
    }

    async fn read_streams(self: Arc<Self>, conn: quinn::Connection, peer: String) {
        let remote = conn.remote_address();
        loop {
            let uni = tokio::select! {
                uni = conn.accept_uni() => uni,
                bi = conn.accept_bi() => {
                    match bi {
                        Ok((send, recv)) => self.offer_stream(&peer, remote, send, recv),
                        Err(e) => {
                            debug!(peer = %remote, error = %e, "mesh connection closed");
                            break;
                        }
                    }
                    continue;
                }
            };
            let mut stream = match uni {
                Ok(s) => s,
                Err(e) => {
                    debug!(peer = %remote, error = %e, "mesh connection closed");
                    break;
                }
            };
            match stream.read_to_end(MAX_MESSAGE).await {
                Ok(bytes) => {
                    self.traffic
                        .gossip_messages_received
                        .fetch_add(1, Ordering::Relaxed);
                    self.traffic
                        .gossip_bytes_received
                        .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    if self.inbound.try_send((remote, Bytes::from(bytes))).is_err() {
                        debug!(peer = %remote, "gossip inbound queue full; message dropped");
                    }
                }
                Err(e) => warn!(peer = %remote, error = %e, "bad gossip stream dropped"),
            }
        }
        let mut conns = self.conns.lock().expect("conn lock is never poisoned");
        if conns.get(&remote).map(|c| c.stable_id()) == Some(conn.stable_id()) {
            conns.remove(&remote);
        }
        drop(conns);
        self.account_closed(&conn);
    }

    /// A pooled connection to `addr`, dialing if there is none.
    async fn connection(self: &Arc<Self>, addr: SocketAddr) -> Result<quinn::Connection, String> {
        let pooled = self
            .conns
            .lock()
            .expect("conn lock is never poisoned")
            .get(&addr)
            .cloned();
        if let Some(conn) = pooled
            && conn.close_reason().is_none()
        {
            return Ok(conn);
        }
        let connecting = self
            .endpoint
            .connect_with(self.client.clone(), addr, tls::DIAL_NAME)
            .map_err(|e| e.to_string())?;
        let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
            .await
            .map_err(|_| "handshake timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        self.adopt(conn.clone(), "dialed")
            .ok_or_else(|| "peer certificate names no node".to_owned())?;
        Ok(conn)
    }

    /// Closes the connection to `addr`, if any: every stream on it fails.
    pub(crate) fn close_peer(&self, addr: SocketAddr, why: &str) {
        let conn = self
            .conns
            .lock()
            .expect("conn lock is never poisoned")
            .remove(&addr);
        if let Some(c) = conn {
            debug!(peer = %addr, why, "closing the connection");
            c.close(quinn::VarInt::from_u32(0), why.as_bytes());
        }
    }

    /// Dials `addr` in the background if no connection to it exists, so
    /// its certificate name becomes known. At most one probe per address
    /// runs at a time.
    pub(crate) fn probe(self: &Arc<Self>, addr: SocketAddr) {
        if self
            .conns
            .lock()
            .expect("conn lock is never poisoned")
            .contains_key(&addr)
        {
            return;
        }
        if !self
            .probing
            .lock()
            .expect("probe lock is never poisoned")
            .insert(addr)
        {
            return;
        }
        let me = self.clone();
        self.spawn(async move {
            if let Err(e) = me.connection(addr).await {
                debug!(peer = %addr, error = %e, "probe failed");
            }
            me.probing
                .lock()
                .expect("probe lock is never poisoned")
                .remove(&addr);
        });
    }

    /// Hands an incoming bidirectional stream to whoever serves them; resets
    /// it when nobody does or the queue is full.
    fn offer_stream(
        &self,
        peer: &str,
        addr: SocketAddr,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) {
        let stream = IncomingStream {
            peer: peer.to_owned(),
            addr,
            stream: MeshStream {
                reader: Box::new(recv),
                writer: Box::new(send),
            },
        };
        let sender = self
            .streams
            .lock()
            .expect("stream lock is never poisoned")
            .clone();
        match sender {
            Some(tx) => {
                if let Err(e) = tx.try_send(stream) {
                    debug!(peer = %addr, "no room for an incoming stream; refused");
                    drop(e);
                }
            }
            None => debug!(peer = %addr, "incoming stream but nobody serves streams; refused"),
        }
    }

    /// Starts handing incoming streams to the returned receiver (replacing
    /// any earlier one).
    pub(crate) fn serve_streams(&self) -> mpsc::Receiver<IncomingStream> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        *self.streams.lock().expect("stream lock is never poisoned") = Some(tx);
        rx
    }

    /// Opens a bidirectional stream to `addr` (dialing if needed).
    pub(crate) async fn open_stream(
        self: &Arc<Self>,
        addr: SocketAddr,
    ) -> Result<MeshStream, String> {
        let conn = self.connection(addr).await?;
        let (send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let path = conn.stats().path;
        debug!(
            peer = %addr,
            mtu = path.current_mtu,
            lost_packets = path.lost_packets,
            congestion_events = path.congestion_events,
            "stream opened"
        );
        Ok(MeshStream {
            reader: Box::new(recv),
            writer: Box::new(send),
        })
    }

    /// Sends one message on its own stream.
    async fn deliver(self: &Arc<Self>, addr: SocketAddr, msg: &[u8]) -> Result<(), String> {
        let conn = self.connection(addr).await?;
        let mut stream = conn.open_uni().await.map_err(|e| e.to_string())?;
        stream.write_all(msg).await.map_err(|e| e.to_string())?;
        stream.finish().map_err(|e| e.to_string())?;
        self.traffic
            .gossip_messages_sent
            .fetch_add(1, Ordering::Relaxed);
        self.traffic
            .gossip_bytes_sent
            .fetch_add(msg.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// UDP payload bytes sent and received by the endpoint so far.
    pub(crate) fn udp_bytes(&self) -> (u64, u64) {
        let conns = self.conns.lock().expect("conn lock is never poisoned");
        let (mut tx, mut rx) = (
            self.traffic.closed_udp_tx.load(Ordering::Relaxed),
            self.traffic.closed_udp_rx.load(Ordering::Relaxed),
        );
        for c in conns.values() {
            let s = c.stats();
            tx += s.udp_tx.bytes;
            rx += s.udp_rx.bytes;
        }
        (tx, rx)
    }

    pub(crate) async fn shutdown(&self) {
        self.endpoint.close(0u32.into(), b"node leaving");
        let mut tasks = std::mem::take(&mut *self.tasks.lock().expect("task lock"));
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        // Give the close frames a moment to leave.
        let _ = tokio::time::timeout(Duration::from_millis(200), self.endpoint.wait_idle()).await;
    }
}

/// The sending half used by the chitchat socket: per-peer queues drained by
/// per-peer tasks.
#[derive(Debug)]
pub(crate) struct Outbox {
    shared: Arc<Shared>,
    queues: HashMap<SocketAddr, mpsc::Sender<Bytes>>,
}

impl Outbox {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            queues: HashMap::new(),
        }
    }

    pub(crate) fn send(&mut self, to: SocketAddr, msg: Bytes) {
        let queue = self.queues.entry(to).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let shared = self.shared.clone();
            self.shared.spawn(peer_sender(shared, to, rx));
            tx
        });
        match queue.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                debug!(peer = %to, "gossip queue full; message dropped");
            }
            Err(mpsc::error::TrySendError::Closed(msg)) => {
                // The peer's task ended (idle); start a new one.
                self.queues.remove(&to);
                self.send(to, msg);
            }
        }
    }
}

async fn peer_sender(shared: Arc<Shared>, to: SocketAddr, mut rx: mpsc::Receiver<Bytes>) {
    let mut down_until: Option<tokio::time::Instant> = None;
    // A task for a peer that stays silent for a minute ends; the next
    // message starts a new one.
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
        if let Some(t) = down_until
            && tokio::time::Instant::now() < t
        {
            continue;
        }
        match shared.deliver(to, &msg).await {
            Ok(()) => down_until = None,
            Err(e) => {
                debug!(peer = %to, error = %e, "gossip send failed");
                if !e.contains("timed out") && (e.contains("crypto") || e.contains("certificate")) {
                    warn!(peer = %to, error = %e, "mesh peer rejected");
                }
                down_until = Some(tokio::time::Instant::now() + DIAL_BACKOFF);
            }
        }
    }
}
