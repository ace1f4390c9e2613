//! chitchat's `Transport` over the mesh: chitchat sees a socket that sends
//! and receives whole messages by address; underneath, each message is a
//! QUIC stream on a mutually authenticated connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use chitchat::transport::{Socket, Transport};
use chitchat::{ChitchatMessage, Deserializable, Serializable};
use tokio::sync::mpsc;
use tracing::warn;

use crate::mesh::{Outbox, Shared};

/// Hands chitchat the one socket of this node's mesh. chitchat opens its
/// transport exactly once, at start.
pub(crate) struct MeshTransport {
    pub(crate) shared: Arc<Shared>,
    pub(crate) inbound: Mutex<Option<mpsc::Receiver<(SocketAddr, Bytes)>>>,
}

#[async_trait]
impl Transport for MeshTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let local = self.shared.endpoint.local_addr()?;
        anyhow::ensure!(
            local == listen_addr,
            "chitchat listens on {listen_addr} but the mesh is bound to {local}"
        );
        let inbound = self
            .inbound
            .lock()
            .map_err(|_| anyhow::anyhow!("mesh transport lock poisoned"))?
            .take()
            .ok_or_else(|| anyhow::anyhow!("the mesh socket is already open"))?;
        Ok(Box::new(MeshSocket {
            outbox: Outbox::new(self.shared.clone()),
            inbound,
            buf: Vec::new(),
        }))
    }
}

struct MeshSocket {
    outbox: Outbox,
    inbound: mpsc::Receiver<(SocketAddr, Bytes)>,
    buf: Vec<u8>,
}

#[async_trait]
impl Socket for MeshSocket {
    async fn send(&mut self, to: SocketAddr, msg: ChitchatMessage) -> anyhow::Result<()> {
        self.buf.clear();
        msg.serialize(&mut self.buf);
        self.outbox.send(to, Bytes::copy_from_slice(&self.buf));
        Ok(())
    }

    async fn recv(&mut self) -> anyhow::Result<(SocketAddr, ChitchatMessage)> {
        loop {
            let (from, bytes) = self
                .inbound
                .recv()
                .await
                .ok_or_else(|| anyhow::anyhow!("mesh closed"))?;
            let mut buf = &bytes[..];
            match ChitchatMessage::deserialize(&mut buf) {
                Ok(msg) => return Ok((from, msg)),
                Err(e) => {
                    warn!(peer = %from, len = bytes.len(), error = %e, "undecodable gossip message dropped")
                }
            }
        }
    }
}
