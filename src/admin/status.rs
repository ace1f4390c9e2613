//! `GET /v1/status` (the cluster as this node sees it) and the CLI's
//! `ringhost status`, which prints it.

use std::path::Path;

use anyhow::Context;
use gossip::{ClusterView, Gossip, MemberState, TrafficStats};
use hyper::Method;
use serde::{Deserialize, Serialize};

use super::client::{call, say};
use crate::fail::{EXIT_RUNTIME, Fail, FailCode};

/// `GET /v1/status`: the JSON contract of `ringhost status --json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub node: String,
    pub cluster: String,
    pub generation: u64,
    pub mesh_addr: String,
    pub members: Vec<StatusMember>,
    pub gossip: GossipTraffic,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusMember {
    pub name: String,
    pub state: String,
    pub generation: u64,
    pub mesh_addr: String,
    pub zone: Option<String>,
    pub version: String,
    pub proxy: StatusProxy,
    pub capacity: u32,
    #[serde(rename = "self")]
    pub is_self: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StatusProxy {
    pub http: Vec<String>,
    pub https: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GossipTraffic {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub gossip_bytes_sent: u64,
    pub gossip_bytes_received: u64,
    pub udp_bytes_sent: u64,
    pub udp_bytes_received: u64,
}

impl From<TrafficStats> for GossipTraffic {
    fn from(t: TrafficStats) -> Self {
        GossipTraffic {
            messages_sent: t.messages_sent,
            messages_received: t.messages_received,
            gossip_bytes_sent: t.gossip_bytes_sent,
            gossip_bytes_received: t.gossip_bytes_received,
            udp_bytes_sent: t.udp_bytes_sent,
            udp_bytes_received: t.udp_bytes_received,
        }
    }
}

pub fn status_of(view: &ClusterView, gossip: &Gossip) -> Status {
    let me = view.members.iter().find(|m| m.is_self);
    Status {
        node: me.map(|m| m.name.to_string()).unwrap_or_default(),
        cluster: gossip.cluster().to_owned(),
        generation: me.map(|m| m.generation).unwrap_or_default(),
        mesh_addr: gossip.local_addr().to_string(),
        members: view
            .members
            .iter()
            .map(|m| StatusMember {
                name: m.name.to_string(),
                state: m.state.to_string(),
                generation: m.generation,
                mesh_addr: m.mesh_addr.to_string(),
                zone: m.zone.as_ref().map(|z| z.to_string()),
                version: m.version.clone(),
                proxy: StatusProxy {
                    http: m.proxy.http.iter().map(|a| a.to_string()).collect(),
                    https: m.proxy.https.iter().map(|a| a.to_string()).collect(),
                },
                capacity: m.capacity,
                is_self: m.is_self,
            })
            .collect(),
        gossip: gossip.traffic().into(),
    }
}

pub fn status(data_dir: &Path, as_json: bool) -> Result<(), Fail> {
    let (code, body) = call(data_dir, Method::GET, "/v1/status")?;
    if !code.is_success() {
        return Err(Fail {
            code: EXIT_RUNTIME,
            err: anyhow::anyhow!("status failed ({code}): {}", String::from_utf8_lossy(&body)),
        });
    }
    if as_json {
        say(String::from_utf8_lossy(&body).trim_end());
        return Ok(());
    }
    let st: Status = serde_json::from_slice(&body)
        .context("the node's status is not the expected JSON")
        .code(EXIT_RUNTIME)?;
    say(&render_table(&st));
    Ok(())
}

fn render_table(st: &Status) -> String {
    let mut rows = vec![[
        "NAME".to_owned(),
        "STATE".to_owned(),
        "GENERATION".to_owned(),
        "MESH".to_owned(),
        "ZONE".to_owned(),
        "VERSION".to_owned(),
    ]];
    for m in &st.members {
        rows.push([
            if m.is_self {
                format!("{} *", m.name)
            } else {
                m.name.clone()
            },
            m.state.clone(),
            m.generation.to_string(),
            m.mesh_addr.clone(),
            m.zone.clone().unwrap_or_else(|| "-".into()),
            m.version.clone(),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let alive = st
        .members
        .iter()
        .filter(|m| m.state == MemberState::Alive.to_string())
        .count();
    let joining = st
        .members
        .iter()
        .filter(|m| m.state == MemberState::Joining.to_string())
        .count();
    let joining = if joining > 0 {
        format!(", {joining} joining")
    } else {
        String::new()
    };
    let mut out = format!(
        "cluster {} seen from {} (* = this node): {} of {} members alive{joining}\n",
        st.cluster,
        st.node,
        alive,
        st.members.len()
    );
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.trim_end().to_owned()
}
