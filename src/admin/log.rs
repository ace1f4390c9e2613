//! `GET /v1/sites/NAME/log`: the end of a command site's runtime log,
//! read here or fetched from the site's master.

use std::time::Duration;

use model::SiteName;
use tokio::io::AsyncReadExt;

use super::reply::{Body, json};
use crate::logs::{LOG_TAIL, read_log_tail};
use crate::rpc::{self, Reply};
use crate::serving::current_specs;
use crate::sites::{Sites, model_view};

/// `GET /v1/sites/NAME/log`: the end of the runtime log, from the site's
/// master (this node, or asked over the mesh).
pub async fn log(sites: &Sites, name: &str) -> hyper::Response<Body> {
    use hyper::StatusCode;
    let text = |status: StatusCode, body: Vec<u8>| {
        let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    let err = |status: StatusCode, msg: String| json(status, &serde_json::json!({ "error": msg }));
    let Ok(site) = name.parse::<SiteName>() else {
        return err(
            StatusCode::BAD_REQUEST,
            format!("invalid site name '{name}'"),
        );
    };
    let view = model_view(&sites.gossip.view().borrow());
    if !current_specs(&view).contains_key(&site) {
        return err(StatusCode::NOT_FOUND, format!("no site '{site}'"));
    }
    let master = model::serving_master(&view, &site).map(|(n, _)| n);
    if master.as_ref().is_none_or(|m| *m == sites.me) {
        // Master here, or no master: this node's log, if it has one.
        let s2 = site.clone();
        return match tokio::task::spawn_blocking(move || read_log_tail(&s2)).await {
            Ok(Ok(Some(b))) => text(StatusCode::OK, b),
            Ok(Ok(None)) => err(
                StatusCode::NOT_FOUND,
                format!("site '{site}' has no runtime log on this node"),
            ),
            Ok(Err(e)) => err(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the log of site '{site}': {e}"),
            ),
            Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
    }
    let Some(master) = master else {
        return err(StatusCode::SERVICE_UNAVAILABLE, "no master".into());
    };
    let fetch = async {
        let mut s = sites
            .gossip
            .open_stream(&master)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach master {master}: {e}"))?;
        rpc::write_frame(&mut s.writer, &rpc::Request::Log { site: site.clone() }).await?;
        let reply: Reply = rpc::read_frame(&mut s.reader).await?;
        let mut body = Vec::new();
        if reply.ok {
            (&mut s.reader)
                .take(LOG_TAIL)
                .read_to_end(&mut body)
                .await?;
        }
        anyhow::Ok((reply, body))
    };
    match tokio::time::timeout(Duration::from_secs(10), fetch).await {
        Ok(Ok((r, body))) if r.ok => text(StatusCode::OK, body),
        Ok(Ok((r, _))) => err(
            r.status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::BAD_GATEWAY),
            format!("{} (on {master})", r.error.unwrap_or_default()),
        ),
        Ok(Err(e)) => err(StatusCode::BAD_GATEWAY, format!("{e:#}")),
        Err(_) => err(
            StatusCode::GATEWAY_TIMEOUT,
            format!("{master} did not send the log within 10 s"),
        ),
    }
}
