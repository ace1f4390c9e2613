//! The gossip keys a node writes about itself, and how they are read back.
//! docs/gossip-keys.md is the reference; keep the two in step.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use chitchat::ChitchatId;
use model::{NodeName, Zone};

use crate::{Member, MemberState, ProxyAddrs};

/// `node:mesh` — the node's QUIC mesh address, `ip:port`.
pub const MESH: &str = "node:mesh";
/// `node:http` — the node's HTTP proxy addresses, comma-separated (may be empty).
pub const HTTP: &str = "node:http";
/// `node:https` — the node's TLS proxy addresses, comma-separated (may be empty).
pub const HTTPS: &str = "node:https";
/// `node:version` — the ringhost version the node runs.
pub const VERSION: &str = "node:version";
/// `node:zone` — the node's failure domain, or empty.
pub const ZONE: &str = "node:zone";
/// `node:capacity` — relative capacity for placement, an unsigned integer.
pub const CAPACITY: &str = "node:capacity";
/// `node:left` — `1` once the node has begun to leave the cluster.
pub const LEFT: &str = "node:left";

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn split(s: Option<&String>) -> Vec<SocketAddr> {
    s.map(|s| s.split(',').filter_map(|a| a.parse().ok()).collect())
        .unwrap_or_default()
}

pub(crate) fn node_facts(
    mesh: SocketAddr,
    zone: &Option<Zone>,
    capacity: u32,
    proxy: &ProxyAddrs,
) -> Vec<(String, String)> {
    vec![
        (MESH.into(), mesh.to_string()),
        (HTTP.into(), join(&proxy.http)),
        (HTTPS.into(), join(&proxy.https)),
        (VERSION.into(), env!("CARGO_PKG_VERSION").into()),
        (
            ZONE.into(),
            zone.as_ref().map(|z| z.to_string()).unwrap_or_default(),
        ),
        (CAPACITY.into(), capacity.to_string()),
    ]
}

pub(crate) fn member_from(
    name: NodeName,
    id: &ChitchatId,
    state: MemberState,
    is_self: bool,
    keys: BTreeMap<String, String>,
) -> Member {
    Member {
        name,
        state,
        generation: id.generation_id,
        mesh_addr: id.gossip_advertise_addr,
        zone: keys.get(ZONE).and_then(|z| z.parse().ok()),
        version: keys.get(VERSION).cloned().unwrap_or_default(),
        proxy: ProxyAddrs {
            http: split(keys.get(HTTP)),
            https: split(keys.get(HTTPS)),
        },
        capacity: keys.get(CAPACITY).and_then(|c| c.parse().ok()).unwrap_or(0),
        is_self,
        keys,
    }
}
