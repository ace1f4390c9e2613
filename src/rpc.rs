//! Node-to-node requests over mesh streams: one request per stream, as a
//! length-prefixed JSON frame, answered by a JSON frame and, for transfers,
//! raw bytes until the stream ends.
//!
//! Frames are at most [`MAX_FRAME`] bytes; a larger length is a broken or
//! hostile peer and ends the stream. So a request stream always starts
//! with the byte 0 (the top byte of the frame length).
//!
//! A stream that starts with [`TUNNEL_STREAM`] instead is a proxy tunnel:
//! the proxy's `TunnelHeader` (proxy/src/tunnel.rs, version 1) follows,
//! then the client's bytes. The master hands it to `Proxy::serve_tunnel`
//! (`mesh_server::dispatch_stream`).

use anyhow::{Context, bail};
use model::{NodeName, SiteName, SiteSpec};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const MAX_FRAME: u32 = 1 << 20;

/// The first byte of a proxy tunnel stream (a request frame starts with 0).
pub const TUNNEL_STREAM: u8 = 0x54;

/// What a peer asks of this node.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// "Send me what I lack of `site`": `have` lists the guids of the
    /// asker's snapshots, oldest first. Answer: [`PullReply`], then the
    /// stream's bytes.
    Pull { site: SiteName, have: Vec<String> },
    /// "Which snapshots of `site` do you hold?" Answer: [`ChainReply`].
    Chain { site: SiteName },
    /// "Create this site as its first master." Answer: [`Reply`].
    Create { spec: SiteSpec },
    /// "Replace the content of `site` with this tar stream" (follows the
    /// frame). Answer: [`Reply`] once the upload is in a snapshot.
    Push { site: SiteName },
    /// "Send me the end of `site`'s runtime log." Answer: [`Reply`], then
    /// the log's bytes until the stream ends.
    Log { site: SiteName },
    /// Live migration, to the site's master: "move `site` to `to`".
    /// Answer: [`crate::migration_log::Progress`] frames until the last one.
    Migrate { site: SiteName, to: NodeName },
    /// Live migration, to the target: "keep a copy of `site`" (`unpin`:
    /// stop wanting it). Answer: [`Reply`].
    MigratePin { site: SiteName, unpin: bool },
    /// Live migration, to the target: "where is your copy of `site`?"
    /// Answer: [`CopyReply`].
    MigrateStatus { site: SiteName },
    /// Live migration, to the target: "catch up with snapshot `guid`
    /// (`seq`) from me, then become master at `epoch` and serve"; given up
    /// after `within_ms`. Answer: [`Reply`] once the target serves.
    MigrateTakeOver {
        site: SiteName,
        epoch: u64,
        seq: u64,
        guid: String,
        within_ms: u64,
    },
}

/// A copy's state, as [`Request::MigrateStatus`] answers it.
#[derive(Debug, Serialize, Deserialize)]
pub struct CopyReply {
    /// "master", "replica", "diverged", or null without a copy.
    pub role: Option<String>,
    pub epoch: u64,
    pub seq: Option<u64>,
    pub guid: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum PullReply {
    /// The stream follows: incremental from `from` (a guid) or full.
    Send {
        from: Option<String>,
        to: String,
        seq: u64,
    },
    /// The asker already has the newest snapshot.
    UpToDate,
    /// The asker holds snapshots this node lacks; `common` is the newest
    /// snapshot both hold, if any.
    Diverged { common: Option<String> },
    /// This node cannot serve the pull (not a holder, an error).
    Refused { error: String },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ChainReply {
    pub guids: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub error: Option<String>,
    /// The HTTP status the admin API should answer with on error.
    pub status: Option<u16>,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply {
            ok: true,
            error: None,
            status: None,
        }
    }
    pub fn err(status: u16, error: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(error.into()),
            status: Some(status),
        }
    }
}

pub async fn write_frame<T: Serialize>(
    w: &mut (impl AsyncWrite + Unpin + ?Sized),
    value: &T,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(value)?;
    let len = u32::try_from(body.len()).context("frame too large")?;
    if len > MAX_FRAME {
        bail!("frame of {len} bytes exceeds the limit of {MAX_FRAME}");
    }
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await?;
    Ok(())
}

pub async fn read_frame<T: DeserializeOwned>(
    r: &mut (impl AsyncRead + Unpin + ?Sized),
) -> anyhow::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .await
        .context("stream ended before a frame")?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        bail!("frame of {len} bytes exceeds the limit of {MAX_FRAME}");
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)
        .await
        .context("stream ended inside a frame")?;
    serde_json::from_slice(&body).context("malformed frame")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let req = Request::Chain {
            site: "blog".parse().expect("name"),
        };
        write_frame(&mut a, &req).await.expect("write");
        let got: Request = read_frame(&mut b).await.expect("read");
        assert!(matches!(got, Request::Chain { site } if site.as_str() == "blog"));
        // A hostile length is refused without allocating it.
        a.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        let err = read_frame::<Request>(&mut b).await.expect_err("too large");
        assert!(err.to_string().contains("exceeds"), "{err}");
        // Garbage is an error, not a panic.
        a.write_all(&3u32.to_be_bytes()).await.expect("write");
        a.write_all(b"{x}").await.expect("write");
        assert!(read_frame::<Request>(&mut b).await.is_err());
    }
}
