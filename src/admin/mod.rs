//! The admin API: HTTP/1.1 with JSON bodies on a Unix socket in the data
//! dir (mode 0600, so only the node's user can use it). This module holds
//! the server and its routes; each resource is a module of its own
//! (`status`, `sites`, `log`, `migration`), as is the client side that
//! the CLI commands use (`client`).
//!
//! Routes (docs/admin-api.md is the contract):
//! - `GET /v1/status` — the cluster as this node sees it.
//! - `GET /v1/sites/NAME/log` — the end of a command site's runtime log.

pub mod client;
mod log;
mod migration;
mod reply;
pub mod sites;
mod status;

use std::path::{Path, PathBuf};

use anyhow::Context;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::task::JoinSet;
use tracing::debug;

pub use client::say;
use reply::{Body, error, json};
pub use status::status;

use crate::sites::Sites;

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
            json(StatusCode::OK, &status::status_of(&view, &gossip))
        }
        (Method::GET, ["v1", "sites"]) => json(StatusCode::OK, &sites::list(&sites)),
        (Method::POST, ["v1", "sites"]) => sites::create(&sites, req.into_body()).await,
        (Method::GET, ["v1", "sites", name]) => sites::show(&sites, name).await,
        (Method::GET, ["v1", "sites", name, "log"]) => log::log(&sites, name).await,
        (Method::PUT, ["v1", "sites", name, "content"]) => {
            sites::push(&sites, name, req.into_body()).await
        }
        (Method::DELETE, ["v1", "sites", name]) => sites::delete(&sites, name).await,
        (Method::POST, ["v1", "sites", name, "migrate"]) => {
            migration::start(&sites, name, req.into_body()).await
        }
        (Method::GET, ["v1", "sites", name, "migration"]) => migration::log(&sites, name),
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
