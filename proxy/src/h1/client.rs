//! The client side of a connection: reading heads, routing each by its
//! own Host, and the proxy's own answers (static files, 503, errors).

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::debug;

use super::body::html_escape;
use crate::engine::Proxy;
use crate::gate::{InFlight, Pass};
use crate::http::{HttpError, Method, RequestBody, RequestHead, parse_request, reason};
use crate::pool::{Upstream, UpstreamKey};
use crate::routes::{Backend, Resolved, Target};

/// The initial head buffer; it grows up to the head limit when needed.
pub(super) const HEAD_BUF: usize = 2048;

pub(super) struct Client<R, W> {
    pub(super) r: R,
    pub(super) w: W,
    /// Bytes read from the client and not yet handled: the next head, or
    /// the start of the current body.
    pub(super) buf: Vec<u8>,
    /// The client: the socket's peer, or the tunnel header's client.
    pub(super) peer: SocketAddr,
    /// Set on the master for a stream that came through a tunnel: the site
    /// the ingress node routed it to.
    pub(super) tunnel_site: Option<String>,
    /// This connection's tunnel to a remote master, kept for the next
    /// request to the same site (a tunnel carries one client's requests).
    pub(super) tunnel: Option<(UpstreamKey, Upstream)>,
    /// The site gate's count of the request being served locally.
    pub(super) in_flight: Option<InFlight>,
}

pub(super) enum Next {
    KeepAlive,
    Close,
}

pub(super) enum HeadRead {
    Head(RequestHead),
    Closed,
    Timeout,
    Bad(HttpError),
}

pub(crate) async fn serve_connection<R, W>(
    proxy: &Proxy,
    r: R,
    w: W,
    peer: SocketAddr,
    tunnel_site: Option<String>,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let mut c = Client {
        r,
        w,
        buf: Vec::with_capacity(HEAD_BUF),
        peer,
        tunnel_site,
        tunnel: None,
        in_flight: None,
    };
    let mut first = true;
    loop {
        let head = match c.read_head(proxy, first).await {
            HeadRead::Head(h) => h,
            HeadRead::Closed => break,
            HeadRead::Timeout => {
                let _ = c
                    .write_simple(
                        408,
                        "Request Timeout",
                        &[],
                        "request head not received in time\n",
                        false,
                    )
                    .await;
                break;
            }
            HeadRead::Bad(e) => {
                debug!(client = %c.peer, error = %e, "refused request head");
                let status = e.status();
                let _ = c
                    .write_simple(status, reason(status), &[], &format!("{e}\n"), false)
                    .await;
                break;
            }
        };
        first = false;
        match c.handle(proxy, head).await {
            Next::KeepAlive => continue,
            Next::Close => break,
        }
    }
    let _ = c.w.shutdown().await;
}

impl<R, W> Client<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    pub(super) async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 512 {
            self.buf.reserve(HEAD_BUF);
        }
        self.r.read_buf(&mut self.buf).await
    }

    pub(super) async fn read_head(&mut self, proxy: &Proxy, first: bool) -> HeadRead {
        let cfg = proxy.config();
        let start = Instant::now();
        if self.buf.is_empty() {
            let wait = if first {
                cfg.head_timeout
            } else {
                cfg.idle_timeout
            };
            match timeout(wait, self.fill()).await {
                Err(_) if first => return HeadRead::Timeout,
                Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return HeadRead::Closed,
                Ok(Ok(_)) => {}
            }
        }
        let deadline = if first { start } else { Instant::now() } + cfg.head_timeout;
        // Re-parse only when the end of a head may have arrived (or the
        // buffer is short, to refuse non-HTTP at once): a client sending a
        // byte at a time must not cost quadratic work.
        let mut scanned: usize = 0;
        loop {
            let window = &self.buf[scanned.saturating_sub(3)..];
            let may_end = window.windows(4).any(|w| w == b"\r\n\r\n");
            if may_end || self.buf.len() < 64 || self.buf.len() >= cfg.limits.max_head_len {
                match parse_request(&self.buf, &cfg.limits) {
                    Ok(Some(h)) => return HeadRead::Head(h),
                    Ok(None) => {}
                    Err(e) => return HeadRead::Bad(e),
                }
            }
            scanned = self.buf.len();
            match timeout_at(deadline, self.fill()).await {
                Err(_) => return HeadRead::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return HeadRead::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Routes and answers one request whose head is at the front of `buf`.
    pub(super) async fn handle(&mut self, proxy: &Proxy, head: RequestHead) -> Next {
        let routes = proxy.routes();
        let Some(host) = head.host.as_deref() else {
            return self
                .answer(&head, 400, &[], "a Host header is required\n".into())
                .await;
        };
        let (site, target) = match routes.resolve(host) {
            Resolved::UnknownHost => {
                let page = format!(
                    "<!doctype html>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>No site is served at <b>{}</b> on this cluster.</p>\n",
                    html_escape(host)
                );
                return self.answer_html(&head, 404, page).await;
            }
            Resolved::NoTarget { site } => {
                debug!(site, "site without a target");
                return self.unavailable(&head, 5).await;
            }
            Resolved::Site { site, target } => (site, target),
        };
        match target {
            Target::Unavailable { retry_after_s } => {
                // A site this node has just claimed but does not serve yet
                // (its promotion or command start under way): its gate
                // holds the request; then it goes where the routes say.
                if proxy.gates().paused(site) {
                    let site = site.to_owned();
                    let retry_after_s = *retry_after_s;
                    drop(routes);
                    match proxy.gate(&site).await {
                        Pass::Open(in_flight) => drop(in_flight),
                        Pass::Redirect(node) => {
                            let key = UpstreamKey::Tunnel { node, site };
                            return self.forward(proxy, head, key).await;
                        }
                        Pass::Refused => return self.unavailable(&head, retry_after_s).await,
                    }
                    let now = proxy.routes();
                    if !matches!(now.target(&site), Some(Target::Unavailable { .. }) | None) {
                        return Box::pin(self.handle(proxy, head)).await;
                    }
                    return self.unavailable(&head, retry_after_s).await;
                }
                self.unavailable(&head, *retry_after_s).await
            }
            Target::Remote { node } => {
                if self.tunnel_site.is_some() {
                    // The ingress thought this node was master; it is not
                    // (any more). If the site just moved from here, the new
                    // master takes it (the ingress's view is behind);
                    // otherwise one hop only: the client retries.
                    if let Some(to) = proxy.gates().redirected(site) {
                        let key = UpstreamKey::Tunnel {
                            node: to,
                            site: site.to_owned(),
                        };
                        return self.forward(proxy, head, key).await;
                    }
                    return self.unavailable(&head, 1).await;
                }
                let key = UpstreamKey::Tunnel {
                    node: node.clone(),
                    site: site.to_owned(),
                };
                self.forward(proxy, head, key).await
            }
            Target::Local { backend, .. } => {
                if let Some(ts) = &self.tunnel_site
                    && ts != site
                {
                    return self
                        .answer(&head, 421, &[], format!("this stream is for site '{ts}'\n"))
                        .await;
                }
                let backend = backend.clone();
                match proxy.gate(site).await {
                    Pass::Open(in_flight) => self.in_flight = Some(in_flight),
                    Pass::Redirect(node) => {
                        // The site moved to `node` while this request was
                        // held (or after): it goes there.
                        let key = UpstreamKey::Tunnel {
                            node,
                            site: site.to_owned(),
                        };
                        return self.forward(proxy, head, key).await;
                    }
                    Pass::Refused => return self.unavailable(&head, 1).await,
                }
                // A request held by a paused gate goes where the site is
                // now: after a failed hand-over the command may listen on
                // a new port; after a failover, another node serves it.
                let routes_now = proxy.routes();
                let backend = match routes_now.target(site) {
                    Some(Target::Local { backend: now, .. }) => now.clone(),
                    Some(Target::Remote { node }) if self.tunnel_site.is_none() => {
                        self.in_flight = None;
                        let key = UpstreamKey::Tunnel {
                            node: node.clone(),
                            site: site.to_owned(),
                        };
                        return self.forward(proxy, head, key).await;
                    }
                    None => backend,
                    Some(_) => {
                        self.in_flight = None;
                        return self.unavailable(&head, 1).await;
                    }
                };
                let next = match backend {
                    Backend::Tcp(addr) => self.forward(proxy, head, UpstreamKey::Tcp(addr)).await,
                    Backend::Static(root) => self.serve_static(&root, head).await,
                };
                self.in_flight = None;
                next
            }
        }
    }

    pub(super) async fn serve_static(&mut self, root: &std::path::Path, head: RequestHead) -> Next {
        let has_body = !matches!(head.body, RequestBody::None | RequestBody::ContentLength(0));
        let keep_alive = head.keep_alive && !has_body;
        let res = crate::static_files::respond(
            root,
            &head,
            &self.buf[..head.head_len],
            keep_alive,
            &mut self.w,
        )
        .await;
        self.buf.drain(..head.head_len);
        match res {
            Ok(()) if keep_alive => Next::KeepAlive,
            _ => Next::Close,
        }
    }

    pub(super) async fn unavailable(&mut self, head: &RequestHead, retry_after_s: u32) -> Next {
        let retry = retry_after_s.to_string();
        self.answer(
            head,
            503,
            &[("Retry-After", &retry)],
            "the site's master is not reachable right now; retry shortly\n".into(),
        )
        .await
    }

    pub(super) async fn answer_html(
        &mut self,
        head: &RequestHead,
        status: u16,
        page: String,
    ) -> Next {
        self.answer_typed(head, status, &[], "text/html; charset=utf-8", page)
            .await
    }

    pub(super) async fn answer(
        &mut self,
        head: &RequestHead,
        status: u16,
        extra: &[(&str, &str)],
        body: String,
    ) -> Next {
        self.answer_typed(head, status, extra, "text/plain; charset=utf-8", body)
            .await
    }

    /// Answers a request from the proxy itself. A request body that was not
    /// read makes the connection unusable: it is closed.
    pub(super) async fn answer_typed(
        &mut self,
        head: &RequestHead,
        status: u16,
        extra: &[(&str, &str)],
        content_type: &str,
        body: String,
    ) -> Next {
        let has_body = !matches!(head.body, RequestBody::None | RequestBody::ContentLength(0));
        let keep_alive = head.keep_alive && !has_body;
        self.buf.drain(..head.head_len);
        let body = if head.method_kind == Method::Head {
            ""
        } else {
            &body
        };
        let mut out = String::with_capacity(160 + body.len());
        let _ = write!(
            out,
            "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
            reason(status),
            body.len()
        );
        for (k, v) in extra {
            let _ = write!(out, "{k}: {v}\r\n");
        }
        if !keep_alive {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        out.push_str(body);
        match self.w.write_all(out.as_bytes()).await {
            Ok(()) if keep_alive => Next::KeepAlive,
            _ => Next::Close,
        }
    }

    /// A proxy answer outside any request (408, 400 for a bad head).
    pub(super) async fn write_simple(
        &mut self,
        status: u16,
        reason: &str,
        extra: &[(&str, &str)],
        body: &str,
        _keep: bool,
    ) -> io::Result<()> {
        let mut out = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in extra {
            let _ = write!(out, "{k}: {v}\r\n");
        }
        out.push_str("\r\n");
        out.push_str(body);
        self.w.write_all(out.as_bytes()).await?;
        self.w.flush().await
    }
}
