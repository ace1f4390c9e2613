//! The mesh request server: every stream another node opens to this one.
//! A tunnel (first byte [`rpc::TUNNEL_STREAM`]) goes to the proxy; any
//! other stream carries one [`Request`], answered here by the module that
//! owns it: replication (pull, chain, create) from the site driver's
//! store, uploads ([`crate::push`]), runtime logs ([`crate::serving`]) and
//! migrations ([`crate::migrate`]).

use gossip::{IncomingStream, MeshStream};
use model::SiteName;
use model::election::Head;
use proxy::{BoxRead, Proxy};
use storage::Guid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use crate::rpc::{self, ChainReply, PullReply, Request};
use crate::sites::{Sites, blocking};

/// Serves one stream a peer opened: a tunnel goes to the proxy, anything
/// else to the site driver's request handler.
pub async fn dispatch_stream(incoming: IncomingStream, sites: Sites, proxy: Proxy) {
    let IncomingStream { peer, addr, stream } = incoming;
    let MeshStream {
        mut reader,
        mut writer,
    } = stream;
    let mut first = [0u8; 1];
    if reader.read_exact(&mut first).await.is_err() {
        return;
    }
    if first[0] == rpc::TUNNEL_STREAM {
        match proxy::tunnel::read_header(&mut reader).await {
            Ok(h) => proxy.serve_tunnel(h, reader, writer).await,
            Err(e) => {
                warn!(%peer, %addr, error = %e, "bad tunnel header on a mesh stream");
                let _ = writer.shutdown().await;
            }
        }
        return;
    }
    let reader: BoxRead = Box::new(std::io::Cursor::new(first).chain(reader));
    serve_request(
        &sites,
        IncomingStream {
            peer,
            addr,
            stream: MeshStream { reader, writer },
        },
    )
    .await;
}

/// Serves one stream a peer opened to this node.
async fn serve_request(sites: &Sites, incoming: IncomingStream) {
    let peer = incoming.peer.clone();
    let mut s = incoming.stream;
    let req: Request = match rpc::read_frame(&mut s.reader).await {
        Ok(r) => r,
        Err(e) => {
            warn!(peer = %incoming.addr, error = %format!("{e:#}"), "bad request on a mesh stream");
            return;
        }
    };
    debug!(peer = %peer, ?req, "mesh request");
    let result = match req {
        Request::Pull { site, have } => serve_pull(sites, site, have, &peer, &mut s).await,
        Request::Chain { site } => {
            let store = sites.store.clone();
            let chain = blocking(move || store.snapshots(&site))
                .await
                .unwrap_or_default();
            rpc::write_frame(
                &mut s.writer,
                &ChainReply {
                    guids: chain.iter().map(|c| c.guid.0.to_string()).collect(),
                },
            )
            .await
        }
        Request::Create { spec } => {
            let reply = match sites.create_local(spec).await {
                Ok(()) => rpc::Reply::ok(),
                Err(e) => rpc::Reply::err(500, e),
            };
            rpc::write_frame(&mut s.writer, &reply).await
        }
        Request::Push { site } => {
            let reply = crate::push::receive_local(sites, &site, s.reader).await;
            rpc::write_frame(&mut s.writer, &reply).await
        }
        Request::Log { site } => crate::logs::serve_log(&site, &mut s).await,
        Request::Migrate { site, to } => {
            crate::migrate::serve_migrate(sites, site, to, &mut s).await
        }
        Request::MigratePin { site, unpin } => {
            crate::migrate::serve_pin(sites, site, unpin, &mut s).await
        }
        Request::MigrateStatus { site } => crate::migrate::serve_status(sites, site, &mut s).await,
        Request::MigrateTakeOver {
            site,
            epoch,
            seq,
            guid,
            within_ms,
        } => {
            let head = guid.parse().ok().map(|guid| Head { seq, guid });
            crate::migrate::serve_takeover(sites, &peer, site, epoch, head, within_ms, &mut s).await
        }
    };
    if let Err(e) = result {
        debug!(peer = %peer, error = %format!("{e:#}"), "mesh request ended early");
    }
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut s.writer).await;
}

async fn serve_pull(
    sites: &Sites,
    site: SiteName,
    have: Vec<String>,
    peer: &str,
    s: &mut gossip::MeshStream,
) -> anyhow::Result<()> {
    let store = sites.store.clone();
    let site2 = site.clone();
    let mine = match blocking(move || store.snapshots(&site2)).await {
        Ok(m) => m,
        Err(e) => {
            return rpc::write_frame(&mut s.writer, &PullReply::Refused { error: e }).await;
        }
    };
    let Some(newest) = mine.last() else {
        return rpc::write_frame(
            &mut s.writer,
            &PullReply::Refused {
                error: format!("site '{site}' has no snapshot here"),
            },
        )
        .await;
    };
    let have: Vec<u64> = have.iter().filter_map(|g| g.parse().ok()).collect();
    let common = mine
        .iter()
        .rev()
        .find(|m| have.contains(&m.guid.0))
        .map(|m| m.guid);
    let reply = match have.last() {
        None => PullReply::Send {
            from: None,
            to: newest.guid.0.to_string(),
            seq: newest.seq().unwrap_or(0),
        },
        Some(last) if *last == newest.guid.0 => PullReply::UpToDate,
        Some(last) if !mine.iter().any(|m| m.guid.0 == *last) => PullReply::Diverged {
            common: common.map(|g| g.0.to_string()),
        },
        Some(last) => PullReply::Send {
            from: Some(last.to_string()),
            to: newest.guid.0.to_string(),
            seq: newest.seq().unwrap_or(0),
        },
    };
    rpc::write_frame(&mut s.writer, &reply).await?;
    let PullReply::Send { from, .. } = reply else {
        return Ok(());
    };
    let from = from.and_then(|g| g.parse().ok()).map(Guid);
    let to = newest.guid;
    let key = (site.clone(), peer.to_owned());
    let counter = sites.sent.clone();
    let store = sites.store.clone();
    let writer = std::mem::replace(&mut s.writer, Box::new(tokio::io::sink()));
    let mut bridge = tokio_util::io::SyncIoBridge::new(writer);
    let sent = tokio::task::spawn_blocking(move || -> Result<u64, String> {
        // The chain listed above names the snapshots: no second listing
        // before the stream starts.
        let mut stream = store
            .send_listed(&site, &mine, from, to)
            .map_err(|e| e.to_string())?;
        // Large reads and writes: the stream crosses a pipe, TLS and QUIC.
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let got = std::io::Read::read(&mut stream, &mut buf).map_err(|e| e.to_string())?;
            if got == 0 {
                break;
            }
            std::io::Write::write_all(&mut bridge, &buf[..got]).map_err(|e| e.to_string())?;
            n += got as u64;
            // Counted as it goes: a migration's progress reads it.
            *counter
                .lock()
                .expect("sent lock is never poisoned")
                .entry(key.clone())
                .or_insert(0) += got as u64;
        }
        std::io::Write::flush(&mut bridge).map_err(|e| e.to_string())?;
        bridge.shutdown().map_err(|e| e.to_string())?;
        Ok(n)
    })
    .await
    .map_err(|e| anyhow::anyhow!("send task failed: {e}"))?;
    match sent {
        Ok(n) => debug!(bytes = n, "pull served"),
        Err(e) => warn!(error = %e, "sending a snapshot stream failed"),
    }
    Ok(())
}
