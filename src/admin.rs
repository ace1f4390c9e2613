//! The admin API: HTTP/1.1 with JSON bodies on a Unix socket in the data
//! dir (mode 0600, so only the node's user can use it), and the client
//! side that the CLI commands use.
//!
//! Routes (docs/admin-api.md is the contract):
//! - `GET /v1/status` — the cluster as this node sees it.
//! - `GET /v1/sites/NAME/log` — the end of a command site's runtime log.

use std::path::{Path, PathBuf};

use anyhow::Context;
use bytes::Bytes;
use gossip::{ClusterView, Gossip, MemberState, TrafficStats};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tracing::debug;

use crate::sites::Sites;
use crate::{EXIT_NO_NODE, EXIT_RUNTIME, Fail, FailCode};

/// Prints one line for the user on stdout.
pub fn say(line: &str) {
    #[allow(clippy::print_stdout)] // CLI output is the point here
    {
        println!("{line}");
    }
}

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

fn status_of(view: &ClusterView, gossip: &Gossip) -> Status {
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

pub type Body = Full<Bytes>;

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|e| {
        format!("{{\"error\":\"cannot encode the answer: {e}\"}}").into_bytes()
    });
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

#[derive(Serialize)]
struct ApiError {
    error: String,
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    json(status, &ApiError { error: msg.into() })
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    sites: Sites,
) -> Result<Response<Body>, std::convert::Infallible> {
    let gossip = sites.gossip.clone();
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let resp = match (req.method().clone(), parts.as_slice()) {
        (Method::GET, ["v1", "status"]) => {
            let view = gossip.view().borrow().clone();
            json(StatusCode::OK, &status_of(&view, &gossip))
        }
        (Method::GET, ["v1", "sites"]) => json(StatusCode::OK, &crate::site_api::list(&sites)),
        (Method::POST, ["v1", "sites"]) => crate::site_api::create(&sites, req.into_body()).await,
        (Method::GET, ["v1", "sites", name]) => crate::site_api::show(&sites, name).await,
        (Method::GET, ["v1", "sites", name, "log"]) => crate::serving::log(&sites, name).await,
        (Method::PUT, ["v1", "sites", name, "content"]) => {
            crate::site_api::push(&sites, name, req.into_body()).await
        }
        (Method::DELETE, ["v1", "sites", name]) => crate::site_api::delete(&sites, name).await,
        (Method::POST, ["v1", "sites", name, "migrate"]) => {
            crate::migrate::admin_start(&sites, name, req.into_body()).await
        }
        (Method::GET, ["v1", "sites", name, "migration"]) => {
            crate::migrate::admin_log(&sites, name)
        }
        (m, _) => error(
            StatusCode::NOT_FOUND,
            format!("no such admin route: {m} {path}"),
        ),
    };
    Ok(resp)
}

/// The running admin server. [`Server::shutdown`] stops it and every
/// connection it serves, and removes the socket.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    pub fn start(path: &Path, sites: Sites) -> anyhow::Result<Server> {
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot bind admin socket {}", path.display()))?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .with_context(|| format!("cannot restrict admin socket {}", path.display()))?;
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let sites = sites.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| handle(req, sites.clone()));
                            if let Err(e) = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), svc)
                                .await
                            {
                                debug!(error = %e, "admin connection ended with an error");
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(Server {
            path: path.to_owned(),
            task,
        })
    }

    pub async fn shutdown(self) {
        // Aborting the accept task drops its JoinSet, which aborts every
        // connection task with it (and their handles on gossip).
        self.task.abort();
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends one request to the node whose data dir is `data_dir`.
pub fn call(data_dir: &Path, method: Method, path: &str) -> Result<(StatusCode, Bytes), Fail> {
    call_with(data_dir, method, path, None, ClientBody::empty())
}

/// A request body for [`call_with`]: a whole buffer or a stream of chunks.
pub type ClientBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

pub trait EmptyBody {
    fn empty() -> Self;
    fn bytes(b: Vec<u8>) -> Self;
}

impl EmptyBody for ClientBody {
    fn empty() -> Self {
        Full::new(Bytes::new())
            .map_err(|e| match e {})
            .boxed_unsync()
    }
    fn bytes(b: Vec<u8>) -> Self {
        Full::new(Bytes::from(b))
            .map_err(|e| match e {})
            .boxed_unsync()
    }
}

/// Sends one request with a body to the node whose data dir is `data_dir`.
pub fn call_with(
    data_dir: &Path,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: ClientBody,
) -> Result<(StatusCode, Bytes), Fail> {
    let socket = data_dir.join("admin.sock");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .code(EXIT_RUNTIME)?;
    rt.block_on(async {
        let stream = UnixStream::connect(&socket).await.map_err(|e| Fail {
            code: EXIT_NO_NODE,
            err: anyhow::anyhow!(
                "no ringhost node answers at {} ({e}); is a node running with --data-dir {}?",
                socket.display(),
                data_dir.display()
            ),
        })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("admin API handshake failed")
            .code(EXIT_RUNTIME)?;
        let conn = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "ringhost");
        if let Some(ct) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, ct);
        }
        let req = req
            .body(body)
            .context("cannot build the admin request")
            .code(EXIT_RUNTIME)?;
        let resp = sender
            .send_request(req)
            .await
            .context("the node did not answer the admin request")
            .code(EXIT_RUNTIME)?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("the node's answer was cut off")
            .code(EXIT_RUNTIME)?
            .to_bytes();
        conn.abort();
        Ok((status, body))
    })
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
