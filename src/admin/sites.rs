//! The site routes of the admin API, and the JSON contract of `site list`
//! and `site show` (docs/admin-api.md).

use std::collections::BTreeMap;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::StatusCode;
use model::election::Role;
use model::{NodeName, Runtime, SiteKey, SiteName, SiteSpec, View};
use serde::{Deserialize, Serialize};

use super::reply::{Body, json};
use crate::rpc::{self, Reply, Request};
use crate::sites::{STASH_PREFIX, Sites, model_view};

/// `POST /v1/sites`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    pub name: String,
    pub domains: Vec<String>,
    pub replicas: Option<u8>,
    pub runtime: Option<Runtime>,
}

pub const DEFAULT_REPLICAS: u8 = 3;
pub const MAX_REPLICAS: u8 = 9;

#[derive(Debug, Serialize, Deserialize)]
pub struct SiteInfo {
    pub name: String,
    pub domains: Vec<String>,
    pub replicas: u8,
    pub runtime: Option<Runtime>,
    /// The serving master's node name, or null.
    pub master: Option<String>,
    pub epoch: u64,
    pub copies: Vec<CopyInfo>,
    pub stashes: Vec<StashInfo>,
    /// The site's last migrations, oldest first (docs/admin-api.md).
    #[serde(default)]
    pub migrations: Vec<crate::migration_log::Record>,
    /// This node's copy and how it sees the election (`site show` only;
    /// absent when this node holds no copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalInfo>,
}

/// What the answering node holds of a site and why it acts as it does.
#[derive(Debug, Serialize, Deserialize)]
pub struct LocalInfo {
    pub node: String,
    pub role: String,
    pub epoch: u64,
    pub seq: Option<u64>,
    /// An action on the copy is in flight.
    pub busy: bool,
    pub failures: u32,
    pub retry_in_ms: u64,
    pub pinned: bool,
    pub takeover: bool,
    /// The election over this node's view: `keep NODE@EPOCH`,
    /// `elect NODE@EPOCH`, `no quorum` or `no candidate`.
    pub election: String,
    /// Live members of the known ones (keeping a master), and those warm
    /// enough to count for a promotion.
    pub alive: String,
    pub warm: String,
    pub elections_in_ms: u64,
    pub next_look_in_ms: Option<u64>,
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Master => "master",
        Role::Replica => "replica",
        Role::Diverged => "diverged",
    }
}

fn local_info(node: &NodeName, e: model::Explain) -> LocalInfo {
    LocalInfo {
        node: node.to_string(),
        role: role_name(e.role).to_owned(),
        epoch: e.epoch.0,
        seq: e.head.map(|h| h.seq),
        busy: e.busy,
        failures: e.failures,
        retry_in_ms: e.retry_in_ms,
        pinned: e.pinned,
        takeover: e.takeover,
        election: match e.decision {
            model::MasterDecision::Keep { node, epoch } => format!("keep {node}@{epoch}"),
            model::MasterDecision::Elect { node, epoch } => format!("elect {node}@{epoch}"),
            model::MasterDecision::NoQuorum => "no quorum".to_owned(),
            model::MasterDecision::NoCandidate => "no candidate".to_owned(),
        },
        alive: format!("{}/{}", e.quorum.alive_members, e.quorum.known_members),
        warm: format!(
            "{}/{}",
            e.promotion.alive_members, e.promotion.known_members
        ),
        elections_in_ms: e.elections_in_ms,
        next_look_in_ms: e.next_tick_in_ms,
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CopyInfo {
    pub node: String,
    pub role: String,
    pub alive: bool,
    pub epoch: u64,
    pub head: HeadInfo,
    pub lag_s: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HeadInfo {
    pub seq: u64,
    /// Decimal string (a u64 does not survive JSON readers that use doubles).
    pub guid: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct StashInfo {
    pub node: String,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SiteList {
    pub sites: Vec<SiteInfo>,
}

fn error(status: StatusCode, msg: impl Into<String>) -> hyper::Response<Body> {
    #[derive(Serialize)]
    struct E {
        error: String,
    }
    json(status, &E { error: msg.into() })
}

fn reply_to_response(r: Reply, ok: StatusCode) -> hyper::Response<Body> {
    if r.ok {
        #[derive(Serialize)]
        struct Ok {
            ok: bool,
        }
        json(ok, &Ok { ok: true })
    } else {
        let status = r
            .status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        error(status, r.error.unwrap_or_default())
    }
}

/// Sites as the view shows them, deleted incarnations left out.
fn site_infos(sites: &Sites, view: &View, raw: &gossip::ClusterView) -> Vec<SiteInfo> {
    let mut specs: BTreeMap<SiteName, SiteSpec> = BTreeMap::new();
    let mut deleted: BTreeMap<SiteName, Vec<u64>> = BTreeMap::new();
    let mut names: BTreeMap<SiteName, ()> = BTreeMap::new();
    for m in view.members.values() {
        for k in &m.keys {
            match k {
                SiteKey::Spec(s, spec) => {
                    names.insert(s.clone(), ());
                    let better = specs
                        .get(s)
                        .is_none_or(|b| (spec.id, spec.version) > (b.id, b.version));
                    if better {
                        specs.insert(s.clone(), spec.clone());
                    }
                }
                SiteKey::Copy(s, _) => {
                    names.insert(s.clone(), ());
                }
                SiteKey::Deleted(s, id) => deleted.entry(s.clone()).or_default().push(*id),
                SiteKey::Vote(..) => {}
            }
        }
    }
    let lag = sites.lag.lock().expect("lag lock is never poisoned");
    let mut out = Vec::new();
    for site in names.into_keys() {
        let spec = specs.get(&site);
        let dead_ids = deleted.get(&site).cloned().unwrap_or_default();
        if spec.is_some_and(|s| dead_ids.contains(&s.id)) {
            continue;
        }
        let master = model::serving_master(view, &site);
        let mut copies = Vec::new();
        for (node, m) in &view.members {
            for k in &m.keys {
                if let SiteKey::Copy(s, ck) = k
                    && *s == site
                    && !dead_ids.contains(&ck.spec_id)
                {
                    copies.push((node.clone(), m.alive, *ck));
                }
            }
        }
        if spec.is_none() && copies.is_empty() {
            continue;
        }
        let master_seq = master
            .as_ref()
            .and_then(|(mn, _)| copies.iter().find(|(n, _, _)| n == mn))
            .map(|(_, _, c)| c.seq)
            .unwrap_or(0);
        let mut stashes = Vec::new();
        for m in &raw.members {
            if let Some(v) = m.keys.get(&format!("{STASH_PREFIX}{site}"))
                && let Ok(list) = serde_json::from_str::<Vec<String>>(v)
            {
                for name in list {
                    stashes.push(StashInfo {
                        node: m.name.to_string(),
                        name,
                    });
                }
            }
        }
        out.push(SiteInfo {
            name: site.to_string(),
            domains: spec
                .map(|s| s.domains.iter().map(|d| d.to_string()).collect())
                .unwrap_or_default(),
            replicas: spec.map(|s| s.replicas).unwrap_or(0),
            runtime: spec.map(|s| s.runtime.clone()),
            master: master.as_ref().map(|(n, _)| n.to_string()),
            epoch: master
                .as_ref()
                .map(|(_, e)| e.0)
                .unwrap_or_else(|| copies.iter().map(|(_, _, c)| c.epoch.0).max().unwrap_or(0)),
            copies: copies
                .into_iter()
                .map(|(node, alive, c)| CopyInfo {
                    node: node.to_string(),
                    role: role_name(c.role).to_owned(),
                    alive,
                    epoch: c.epoch.0,
                    head: HeadInfo {
                        seq: c.seq,
                        guid: c.guid.to_string(),
                    },
                    lag_s: (lag.lag_s(&site, c.seq, master_seq) * 1000.0).round() / 1000.0,
                })
                .collect(),
            stashes,
            migrations: crate::migration_log::history_of(raw, &site, spec.map(|s| s.id)),
            local: None,
        });
    }
    out
}

pub fn list(sites: &Sites) -> SiteList {
    let raw = sites.gossip.view().borrow().clone();
    let view = model_view(&raw);
    SiteList {
        sites: site_infos(sites, &view, &raw),
    }
}

pub async fn show(sites: &Sites, name: &str) -> hyper::Response<Body> {
    let Ok(site) = name.parse::<SiteName>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid site name '{name}'"),
        );
    };
    match list(sites)
        .sites
        .into_iter()
        .find(|s| s.name == site.as_str())
    {
        Some(mut info) => {
            info.local = sites.explain(&site).await.map(|e| local_info(&sites.me, e));
            json(StatusCode::OK, &info)
        }
        None => error(StatusCode::NOT_FOUND, format!("no site '{site}'")),
    }
}

fn validate(req: CreateSite) -> Result<(SiteName, Vec<model::Domain>, u8, Runtime), String> {
    let name: SiteName = req.name.parse().map_err(|e| format!("{e}"))?;
    if req.domains.is_empty() {
        return Err(format!("site '{name}' needs at least one --domain"));
    }
    let mut domains = Vec::new();
    for d in &req.domains {
        let d: model::Domain = d.parse().map_err(|e| format!("{e}"))?;
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    let replicas = req.replicas.unwrap_or(DEFAULT_REPLICAS);
    if !(1..=MAX_REPLICAS).contains(&replicas) {
        return Err(format!(
            "invalid replica count '{replicas}': must be 1 to {MAX_REPLICAS}"
        ));
    }
    let runtime = req.runtime.unwrap_or(Runtime::Static);
    if let Runtime::Command { cmd } = &runtime
        && cmd.trim().is_empty()
    {
        return Err("a command runtime needs a non-empty --cmd".into());
    }
    Ok((name, domains, replicas, runtime))
}

pub async fn create(sites: &Sites, body: hyper::body::Incoming) -> hyper::Response<Body> {
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request: {e}"),
            );
        }
    };
    let req: CreateSite = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
    };
    let (name, domains, replicas, runtime) = match validate(req) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let raw = sites.gossip.view().borrow().clone();
    let view = model_view(&raw);
    let infos = site_infos(sites, &view, &raw);
    if infos.iter().any(|s| s.name == name.as_str()) {
        return error(
            StatusCode::CONFLICT,
            format!("site '{name}' already exists"),
        );
    }
    for d in &domains {
        if let Some(other) = infos.iter().find(|s| s.domains.contains(&d.to_string())) {
            return error(
                StatusCode::CONFLICT,
                format!("domain '{d}' already belongs to site '{}'", other.name),
            );
        }
    }
    let live: Vec<(NodeName, Option<model::Zone>)> = raw
        .members
        .iter()
        .filter(|m| m.state == gossip::MemberState::Alive)
        .map(|m| (m.name.clone(), m.zone.clone()))
        .collect();
    let placed = model::placement(
        &name,
        live.iter().map(|(n, z)| (n, z.as_ref())),
        usize::from(replicas),
    );
    let Some(target) = placed.first().cloned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no live node to place the site on",
        );
    };
    #[allow(clippy::disallowed_methods)] // the spec id only has to be unique
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let id = model::hash::hash_fields(
        "ringhost/spec-id/v1",
        &[
            name.as_str().as_bytes(),
            sites.me.as_str().as_bytes(),
            &nonce.to_le_bytes(),
        ],
    );
    let spec = SiteSpec {
        name: name.clone(),
        domains,
        replicas,
        runtime,
        id,
        version: 1,
    };
    let reply = if target == sites.me {
        match sites.create_local(spec).await {
            Ok(()) => Reply::ok(),
            Err(e) => Reply::err(status_of_storage_error(&e), e),
        }
    } else {
        forward_create(sites, &target, spec).await
    };
    if !reply.ok {
        return reply_to_response(reply, StatusCode::CREATED);
    }
    // Answer once this node routes to the new master, so that a `site
    // push` through this node right after works.
    let routed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rx = sites.gossip.view();
        loop {
            let view = model_view(&rx.borrow_and_update());
            if model::serving_master(&view, &name).is_some() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    if routed.is_err() {
        return error(
            StatusCode::ACCEPTED,
            format!("site '{name}' was created on {target} but its master is not visible here yet"),
        );
    }
    show(sites, name.as_str()).await
}

fn status_of_storage_error(e: &str) -> u16 {
    if e.contains("out of space") {
        507
    } else if e.contains("already exists") {
        409
    } else {
        500
    }
}

async fn forward_create(sites: &Sites, target: &NodeName, spec: SiteSpec) -> Reply {
    let call = async {
        let mut s = sites
            .gossip
            .open_stream(target)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        rpc::write_frame(&mut s.writer, &Request::Create { spec }).await?;
        rpc::read_frame::<Reply>(&mut s.reader).await
    };
    match tokio::time::timeout(Duration::from_secs(60), call).await {
        Ok(Ok(r)) => {
            if let Some(e) = &r.error {
                let status = status_of_storage_error(e);
                return Reply::err(status, format!("on {target}: {e}"));
            }
            r
        }
        Ok(Err(e)) => Reply::err(502, format!("cannot create the site on {target}: {e:#}")),
        Err(_) => Reply::err(504, format!("{target} did not answer within 60 s")),
    }
}

pub async fn push(sites: &Sites, name: &str, body: hyper::body::Incoming) -> hyper::Response<Body> {
    let Ok(site) = name.parse::<SiteName>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid site name '{name}'"),
        );
    };
    use futures_util::TryStreamExt;
    let stream = http_body_util::BodyDataStream::new(body).map_err(std::io::Error::other);
    let reader = Box::new(tokio_util::io::StreamReader::new(stream));
    reply_to_response(
        crate::push::push(sites, &site, reader).await,
        StatusCode::OK,
    )
}

pub async fn delete(sites: &Sites, name: &str) -> hyper::Response<Body> {
    let Ok(site) = name.parse::<SiteName>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid site name '{name}'"),
        );
    };
    if !list(sites).sites.iter().any(|s| s.name == site.as_str()) {
        return error(StatusCode::NOT_FOUND, format!("no site '{site}'"));
    }
    match sites.delete(site).await {
        Ok(()) => reply_to_response(Reply::ok(), StatusCode::ACCEPTED),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}
