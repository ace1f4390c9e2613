//! The byte pumps every protocol ends in once it knows where a connection
//! goes: both ways until both directions ended, and the clean end of a
//! connection that a migration's drain timeout closes.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::gate::InFlight;

/// Copies `r` to `w` with a 64 KiB buffer until EOF, then shuts `w` down.
pub(crate) async fn copy_half<R, W>(r: &mut R, w: &mut W) -> io::Result<u64>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = vec![0u8; crate::pool::IO_BUF];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            let _ = w.shutdown().await;
            return Ok(total);
        }
        w.write_all(&buf[..n]).await?;
        total += n as u64;
    }
}

/// Splices two byte streams both ways until both directions ended. A
/// half-close is passed on; an error on either direction ends both.
pub(crate) async fn splice<R1, W1, R2, W2>(ar: &mut R1, aw: &mut W1, br: &mut R2, bw: &mut W2)
where
    R1: AsyncRead + Unpin + ?Sized,
    W1: AsyncWrite + Unpin + ?Sized,
    R2: AsyncRead + Unpin + ?Sized,
    W2: AsyncWrite + Unpin + ?Sized,
{
    let a2b = copy_half(ar, bw);
    let b2a = copy_half(br, aw);
    tokio::pin!(a2b, b2a);
    tokio::select! {
        r = &mut a2b => if r.is_ok() { let _ = b2a.await; },
        r = &mut b2a => if r.is_ok() { let _ = a2b.await; },
    }
}

/// How long a connection closed for a migration reads (and drops) what
/// the client still sends, so that the close is a FIN, not a reset.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// Ends a spliced connection that a migration's drain timeout closes: a
/// FIN to the client (a clean end of stream, not a reset), the gate's
/// guard released at once (the pause does not wait for the client), then
/// whatever the client still sends is read and dropped for at most
/// [`CLOSE_LINGER`] or until it closes its side: a socket closed with
/// unread data would answer with a reset.
pub(crate) async fn end_for_migration<R, W>(r: &mut R, w: &mut W, in_flight: InFlight)
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let _ = tokio::time::timeout(CLOSE_LINGER, w.shutdown()).await;
    drop(in_flight);
    let mut sink = vec![0u8; 16 * 1024];
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Ok(n) = r.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
