//! The target's side: the pin of its copy, the status it reports, and
//! the takeover of the site at the epoch the master voted for it in.

use std::time::Duration;

use model::election::{Head, Role};
use model::{Epoch, NodeName, SiteName};
use tracing::info;

use super::common::{now, wait_serving};
use crate::rpc::{self, CopyReply, Reply};
use crate::sites::{MigrationEvent, Sites};

/// The target's side: pin or unpin a copy.
pub async fn serve_pin(
    sites: &Sites,
    site: SiteName,
    unpin: bool,
    s: &mut gossip::MeshStream,
) -> anyhow::Result<()> {
    let ev = if unpin {
        MigrationEvent::Unpin(site)
    } else {
        MigrationEvent::Pin(site)
    };
    let reply = match sites.migration(ev).await {
        Ok(()) => Reply::ok(),
        Err(e) => Reply::err(500, e),
    };
    rpc::write_frame(&mut s.writer, &reply).await
}

/// The target's side: where its copy is.
pub async fn serve_status(
    sites: &Sites,
    site: SiteName,
    s: &mut gossip::MeshStream,
) -> anyhow::Result<()> {
    let c = sites.local_copy(&site).await;
    let reply = CopyReply {
        role: c.map(|(r, _, _)| {
            match r {
                Role::Master => "master",
                Role::Replica => "replica",
                Role::Diverged => "diverged",
            }
            .to_owned()
        }),
        epoch: c.map_or(0, |(_, e, _)| e.0),
        seq: c.and_then(|(_, _, h)| h).map(|h| h.seq),
        guid: c.and_then(|(_, _, h)| h).map(|h| h.guid.to_string()),
    };
    rpc::write_frame(&mut s.writer, &reply).await
}

/// The target's side of the hand-over: catch up with `head` from `peer`,
/// claim `epoch`, and answer once the site is served here.
pub async fn serve_takeover(
    sites: &Sites,
    peer: &str,
    site: SiteName,
    epoch: u64,
    head: Option<Head>,
    within_ms: u64,
    s: &mut gossip::MeshStream,
) -> anyhow::Result<()> {
    let reply = takeover(sites, peer, site, epoch, head, within_ms).await;
    rpc::write_frame(&mut s.writer, &reply).await
}

pub(super) async fn takeover(
    sites: &Sites,
    peer: &str,
    site: SiteName,
    epoch: u64,
    head: Option<Head>,
    within_ms: u64,
) -> Reply {
    let Some(head) = head else {
        return Reply::err(400, "malformed snapshot guid");
    };
    let Ok(from) = peer.parse::<NodeName>() else {
        return Reply::err(400, "the asker has no node name");
    };
    let within = Duration::from_millis(within_ms);
    let t0 = now();
    // A copy that cannot take over says so at once, rather than let the
    // source wait out the whole hand-over timeout with its site paused.
    match sites.local_copy(&site).await {
        Some((Role::Replica, e, _)) if e.0 < epoch => {}
        Some((Role::Master, e, _)) if e.0 == epoch => {}
        None => return Reply::err(409, format!("this node holds no copy of '{site}'")),
        Some((role, e, _)) => {
            return Reply::err(
                409,
                format!(
                    "this node's copy of '{site}' is {role:?} at epoch {e}; cannot claim epoch {epoch}"
                ),
            );
        }
    }
    let ev = MigrationEvent::TakeOver {
        site: site.clone(),
        from,
        epoch: Epoch(epoch),
        head,
        within,
    };
    if let Err(e) = sites.migration(ev).await {
        return Reply::err(500, e);
    }
    loop {
        match sites.local_copy(&site).await {
            Some((Role::Master, e, _)) if e.0 == epoch => break,
            Some((_, e, _)) if e.0 > epoch => {
                return Reply::err(409, format!("site '{site}' moved on to epoch {e}"));
            }
            _ => {}
        }
        if t0.elapsed() > within {
            return Reply::err(504, "the final snapshot did not arrive in time");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let left = within.saturating_sub(t0.elapsed());
    if !wait_serving(sites, &site, left).await {
        return Reply::err(
            504,
            "promoted, but the site's command did not start in time",
        );
    }
    info!(%site, epoch, ms = t0.elapsed().as_millis() as u64, "took the site over");
    Reply::ok()
}
