//! `POST /v1/sites/NAME/migrate` and `GET /v1/sites/NAME/migration`: a
//! live migration, started and followed.

use model::{NodeName, SiteName};
use serde::Deserialize;

use super::reply::{Body, json};
use crate::sites::Sites;

/// `POST /v1/sites/NAME/migrate` with `{"to": "NODE"}`: starts a
/// migration; 202 once started (follow it with `GET .../migration`).
pub async fn start(
    sites: &Sites,
    name: &str,
    body: hyper::body::Incoming,
) -> hyper::Response<Body> {
    use http_body_util::BodyExt;
    use hyper::StatusCode;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Ask {
        to: String,
    }
    let err = |status: StatusCode, msg: String| json(status, &serde_json::json!({ "error": msg }));
    let site: SiteName = match name.parse() {
        Ok(s) => s,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("{e}")),
    };
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return err(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request: {e}"),
            );
        }
    };
    let ask: Ask = match serde_json::from_slice(&bytes) {
        Ok(a) => a,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("invalid request: {e}")),
    };
    let to: NodeName = match ask.to.parse() {
        Ok(n) => n,
        Err(e) => return err(StatusCode::BAD_REQUEST, format!("{e}")),
    };
    let view = crate::sites::model_view(&sites.gossip.view().borrow());
    if model::holders(&view, &site).is_empty() {
        return err(StatusCode::NOT_FOUND, format!("no site named '{site}'"));
    }
    match crate::migrate::start(sites, site, to).await {
        Ok(()) => json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "started": true }),
        ),
        Err((code, msg)) => err(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            msg,
        ),
    }
}

/// `GET /v1/sites/NAME/migration`: the events of the site's last
/// migration seen by this node.
pub fn log(sites: &Sites, name: &str) -> hyper::Response<Body> {
    use hyper::StatusCode;
    let log = name.parse::<SiteName>().ok().and_then(|s| {
        sites
            .migrations
            .lock()
            .expect("migrations lock")
            .get(&s)
            .cloned()
    });
    match log {
        Some(l) => json(StatusCode::OK, &l),
        None => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": format!("no migration of '{name}' on this node") }),
        ),
    }
}
