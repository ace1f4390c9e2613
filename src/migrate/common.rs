//! What every step of a migration uses: its bounds, its clock, requests
//! to another node, and the waits on what the site's copies hold.

use std::time::{Duration, Instant};

use model::{NodeName, SiteName};
use proxy::{Backend, Target};

use crate::rpc::{self, Reply, Request};
use crate::sites::Sites;

/// A pre-copy round that sent at most this many bytes ends the pre-copy.
pub const PRECOPY_SMALL: u64 = 1 << 20;

/// Pre-copy rounds at most.
pub const PRECOPY_ROUNDS: u32 = 8;

pub(super) fn ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

#[allow(clippy::disallowed_methods)] // migration phases are timed for real
pub(super) fn now() -> Instant {
    Instant::now()
}

pub(super) async fn call<T: serde::de::DeserializeOwned>(
    sites: &Sites,
    node: &NodeName,
    req: &Request,
) -> Result<T, String> {
    let mut s = sites.gossip.open_stream(node).await?;
    rpc::write_frame(&mut s.writer, req)
        .await
        .map_err(|e| format!("{e:#}"))?;
    rpc::read_frame(&mut s.reader)
        .await
        .map_err(|e| format!("{e:#}"))
}

pub(super) async fn call_ok(sites: &Sites, node: &NodeName, req: &Request) -> Result<(), String> {
    let r: Reply = call(sites, node, req).await?;
    if r.ok {
        Ok(())
    } else {
        Err(r.error.unwrap_or_else(|| "refused".into()))
    }
}

/// Bytes of `site`'s snapshot streams this node has sent to `to`.
pub(super) fn sent_to(sites: &Sites, site: &SiteName, to: &NodeName) -> u64 {
    sites
        .sent
        .lock()
        .expect("sent lock is never poisoned")
        .get(&(site.clone(), to.to_string()))
        .copied()
        .unwrap_or(0)
}

/// Resolves once the failure detector sees `to` dead (or gone): a
/// migration stops waiting for it then, rather than at a timeout.
pub(super) async fn died(sites: &Sites, to: &NodeName, during: &str) -> String {
    let mut view_rx = sites.gossip.view();
    loop {
        let alive = {
            let v = crate::sites::model_view(&view_rx.borrow_and_update());
            v.members.get(to).is_some_and(|m| m.alive && !m.left)
        };
        if !alive {
            return format!("{to} died during {during}");
        }
        if view_rx.changed().await.is_err() {
            return "the node is shutting down".to_owned();
        }
    }
}

/// Waits (bounded) until this node's routes serve `site` locally with its
/// backend accepting connections.
pub(super) async fn wait_serving(sites: &Sites, site: &SiteName, within: Duration) -> bool {
    let Some(proxy) = sites.proxy.get() else {
        return false;
    };
    let t0 = now();
    while t0.elapsed() < within {
        let frozen = sites
            .frozen
            .lock()
            .expect("frozen lock is never poisoned")
            .contains_key(site);
        let target = proxy.routes().target(site.as_str()).cloned();
        let up = match target {
            Some(Target::Local {
                backend: Backend::Static(_),
                ..
            }) => true,
            Some(Target::Local {
                backend: Backend::Tcp(addr),
                ..
            }) => tokio::net::TcpStream::connect(addr).await.is_ok(),
            _ => false,
        };
        if up && !frozen {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}
