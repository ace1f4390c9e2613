//! The mesh's UDP socket: quinn's own, except that a batch of datagrams
//! sent with segmentation offload (GSO) never exceeds what the kernel takes
//! in one call.
//!
//! quinn 0.11 hands the socket up to 10 datagrams of the path's current size
//! in one batch; Linux refuses a GSO batch above 64 KiB. With datagrams
//! larger than 6.5 KB (loopback, jumbo frames) those batches failed and
//! quinn took the losses for a black hole. Splitting them here lets the
//! path's datagrams be as large as it carries: per-datagram work (AEAD
//! setup, header protection, ACKs, one reassembly chunk each) is what a
//! bulk stream's CPU goes to.

use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// The most bytes of datagrams in one GSO send: under the 65,507-byte IPv4
/// payload limit of the single packet that the kernel builds first.
pub(crate) const MAX_GSO_BYTES: usize = 65_000;

/// Room for what one receive may deliver: the kernel coalesces datagrams
/// (GRO) up to 64 KiB unless an administrator raised the device's limit.
const MAX_GRO_BYTES: usize = 256 * 1024;

pub(crate) struct BoundedGso {
    inner: Arc<dyn AsyncUdpSocket>,
    /// The largest datagram the endpoint sends or accepts.
    max_payload: usize,
}

impl fmt::Debug for BoundedGso {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedGso")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl BoundedGso {
    pub(crate) fn new(inner: Arc<dyn AsyncUdpSocket>, max_payload: usize) -> BoundedGso {
        BoundedGso { inner, max_payload }
    }
}

impl AsyncUdpSocket for BoundedGso {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let Some(segment) = transmit.segment_size else {
            return self.inner.try_send(transmit);
        };
        if transmit.contents.len() <= MAX_GSO_BYTES || segment == 0 {
            return self.inner.try_send(transmit);
        }
        // Whole datagrams per call. A failure after a part went out makes
        // quinn retry the whole batch: the receiver drops the duplicates.
        let per_call = (MAX_GSO_BYTES / segment).max(1) * segment;
        for part in transmit.contents.chunks(per_call) {
            self.inner.try_send(&Transmit {
                destination: transmit.destination,
                ecn: transmit.ecn,
                contents: part,
                segment_size: (part.len() > segment).then_some(segment),
                src_ip: transmit.src_ip,
            })?;
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    /// quinn reserves this many largest datagrams for each of the 32
    /// receive slots: with large datagrams, fewer of them fill what one
    /// receive delivers, and the buffers stay a few MB.
    fn max_receive_segments(&self) -> usize {
        self.inner
            .max_receive_segments()
            .min(MAX_GRO_BYTES.div_ceil(self.max_payload.max(1)))
            .max(1)
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}
