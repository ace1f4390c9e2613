//! One HTTP/1.1 client connection: read a head, route it by its own Host,
//! forward it, relay the response, repeat.
//!
//! Heads are parsed in place ([`crate::http`]) and forwarded as read, plus
//! `X-Forwarded-For` and `Forwarded` lines when the request reaches the
//! site's backend on this node (the master adds them, once, for every
//! request: the ingress node passes the client's address in the tunnel
//! header instead). Bodies are framed, not decoded: `Content-Length` by
//! counting, chunked with [`ChunkedDecoder`], close-delimited responses
//! until EOF. Request and response bodies move at the same time, so a
//! backend may answer before the upload ends (the connection then closes).

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};
use tracing::debug;

use crate::chunked::ChunkedDecoder;
use crate::engine::{ConnectError, Proxy};
use crate::gate::{InFlight, Pass};
use crate::http::{
    HttpError, Method, RequestBody, RequestHead, ResponseBody, parse_request, parse_response,
    reason,
};
use crate::pool::{IO_BUF, Upstream, UpstreamKey};
use crate::routes::{Backend, Resolved, Target};
use crate::tunnel::{Protocol, TunnelHeader};

/// The initial head buffer; it grows up to the head limit when needed.
const HEAD_BUF: usize = 2048;

struct Client<R, W> {
    r: R,
    w: W,
    /// Bytes read from the client and not yet handled: the next head, or
    /// the start of the current body.
    buf: Vec<u8>,
    /// The client: the socket's peer, or the tunnel header's client.
    peer: SocketAddr,
    /// Set on the master for a stream that came through a tunnel: the site
    /// the ingress node routed it to.
    tunnel_site: Option<String>,
    /// This connection's tunnel to a remote master, kept for the next
    /// request to the same site (a tunnel carries one client's requests).
    tunnel: Option<(UpstreamKey, Upstream)>,
    /// The site gate's count of the request being served locally.
    in_flight: Option<InFlight>,
}

enum Next {
    KeepAlive,
    Close,
}

enum HeadRead {
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
    async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 512 {
            self.buf.reserve(HEAD_BUF);
        }
        self.r.read_buf(&mut self.buf).await
    }

    async fn read_head(&mut self, proxy: &Proxy, first: bool) -> HeadRead {
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
    async fn handle(&mut self, proxy: &Proxy, head: RequestHead) -> Next {
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

    async fn serve_static(&mut self, root: &std::path::Path, head: RequestHead) -> Next {
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

    async fn unavailable(&mut self, head: &RequestHead, retry_after_s: u32) -> Next {
        let retry = retry_after_s.to_string();
        self.answer(
            head,
            503,
            &[("Retry-After", &retry)],
            "the site's master is not reachable right now; retry shortly\n".into(),
        )
        .await
    }

    async fn answer_html(&mut self, head: &RequestHead, status: u16, page: String) -> Next {
        self.answer_typed(head, status, &[], "text/html; charset=utf-8", page)
            .await
    }

    async fn answer(
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
    async fn answer_typed(
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
    async fn write_simple(
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

    /// Sends the request to `key` and relays the answer.
    async fn forward(&mut self, proxy: &Proxy, head: RequestHead, key: UpstreamKey) -> Next {
        // The outgoing head: as received, plus the client's address when this
        // node hands the request to the backend (only the master does).
        let add_forwarded = matches!(key, UpstreamKey::Tcp(_));
        let mut out = Vec::with_capacity(head.head_len + 192);
        out.extend_from_slice(&self.buf[..head.head_len - 2]);
        if add_forwarded {
            push_forwarded(&mut out, self.peer, head.header(&self.buf, "host"));
        }
        out.extend_from_slice(b"\r\n");
        self.buf.drain(..head.head_len);
        let mut body = BodyState::for_request(head.body);
        // Body bytes that came with the head go out in the same write.
        match body.advance(&self.buf) {
            Ok(used) => {
                out.extend_from_slice(&self.buf[..used]);
                self.buf.drain(..used);
            }
            Err(e) => {
                debug!(client = %self.peer, error = %e, "bad chunked body");
                let _ = self
                    .write_simple(400, "Bad Request", &[], "malformed chunked body\n", false)
                    .await;
                return Next::Close;
            }
        }
        // Without a body left to read, a request on a pooled connection that
        // the backend closed meanwhile can be sent again on a new one.
        let replayable = body.is_done();
        let method = head.method_kind;
        let mut retried = false;
        loop {
            let mut up = match self.upstream(proxy, &key).await {
                Ok(up) => up,
                Err(e) => {
                    let (status, what) = match e {
                        ConnectError::Timeout => (504, "timed out".to_owned()),
                        ConnectError::Io(e) => (502, e.to_string()),
                    };
                    debug!(?key, %what, "upstream unreachable");
                    let _ = self
                        .write_simple(
                            status,
                            reason(status),
                            &[],
                            &format!("the site's backend could not be reached: {what}\n"),
                            false,
                        )
                        .await;
                    return Next::Close;
                }
            };
            let sent = async {
                up.w.write_all(&out).await?;
                up.w.flush().await
            }
            .await;
            let outcome = match sent {
                Ok(()) => self.exchange(proxy, &mut up, &mut body, method).await,
                Err(e) => Err(Failure::NothingReceived(e)),
            };
            match outcome {
                Ok(Exchanged::Done {
                    upstream_reusable,
                    client_may_continue,
                }) => {
                    if upstream_reusable && body.is_done() {
                        self.put_upstream(proxy, key, up);
                    }
                    return if client_may_continue && head.keep_alive && body.is_done() {
                        Next::KeepAlive
                    } else {
                        Next::Close
                    };
                }
                Ok(Exchanged::Upgraded) => {
                    self.splice_upgraded(up).await;
                    return Next::Close;
                }
                Err(Failure::NothingReceived(e)) if up.reused && replayable && !retried => {
                    debug!(?key, error = %e, "pooled connection was closed; retrying on a new one");
                    retried = true;
                    continue;
                }
                Err(Failure::NothingReceived(e)) => {
                    debug!(?key, error = %e, "upstream closed without answering");
                    let _ = self
                        .write_simple(
                            502,
                            "Bad Gateway",
                            &[],
                            "the site's backend closed the connection without answering\n",
                            false,
                        )
                        .await;
                    return Next::Close;
                }
                Err(Failure::BadResponse(e)) => {
                    debug!(?key, error = %e, "invalid response from upstream");
                    let _ = self
                        .write_simple(
                            502,
                            "Bad Gateway",
                            &[],
                            "the site's backend sent an invalid response\n",
                            false,
                        )
                        .await;
                    return Next::Close;
                }
                Err(Failure::Timeout) => {
                    let _ = self
                        .write_simple(
                            504,
                            "Gateway Timeout",
                            &[],
                            "the site's backend did not answer in time\n",
                            false,
                        )
                        .await;
                    return Next::Close;
                }
                Err(Failure::Broken) => return Next::Close,
            }
        }
    }

    async fn upstream(
        &mut self,
        proxy: &Proxy,
        key: &UpstreamKey,
    ) -> Result<Upstream, ConnectError> {
        match key {
            UpstreamKey::Tcp(addr) => proxy.connect_backend(*addr).await,
            UpstreamKey::Tunnel { node, site } => {
                if let Some((k, mut up)) = self.tunnel.take()
                    && k == *key
                {
                    up.reused = true;
                    return Ok(up);
                }
                let header = TunnelHeader {
                    site: site.clone(),
                    protocol: Protocol::Http,
                    client_addr: self.peer,
                };
                let (r, w) = proxy.open_tunnel(node, header).await?;
                Ok(Upstream::new(r, w))
            }
        }
    }

    fn put_upstream(&mut self, proxy: &Proxy, key: UpstreamKey, up: Upstream) {
        match key {
            UpstreamKey::Tcp(_) => proxy.pool().put(key, up),
            UpstreamKey::Tunnel { .. } if up.buf.is_empty() => self.tunnel = Some((key, up)),
            UpstreamKey::Tunnel { .. } => {}
        }
    }

    /// Moves the request body up and the response down, at the same time.
    async fn exchange(
        &mut self,
        proxy: &Proxy,
        up: &mut Upstream,
        body: &mut BodyState,
        method: Method,
    ) -> Result<Exchanged, Failure> {
        let cfg = proxy.config();
        let Client { r, w, buf, .. } = self;
        let Upstream {
            r: ur,
            w: uw,
            buf: ubuf,
            ..
        } = up;
        let send = send_body(r, buf, uw, body, cfg.io_timeout);
        let recv = relay_response(ur, ubuf, w, method, cfg);
        tokio::pin!(send, recv);
        let mut sent = false;
        loop {
            tokio::select! {
                res = &mut send, if !sent => match res {
                    Ok(()) => sent = true,
                    // The client went away or sent a bad body: nothing more
                    // can be delivered either way.
                    Err(_) => return Err(Failure::Broken),
                },
                res = &mut recv => return res,
            }
        }
    }

    /// After a 101 (or a 2xx to CONNECT): both sides stop being HTTP.
    async fn splice_upgraded(&mut self, mut up: Upstream) {
        if !self.buf.is_empty() {
            if up.w.write_all(&self.buf).await.is_err() {
                return;
            }
            self.buf.clear();
        }
        if !up.buf.is_empty() {
            if self.w.write_all(&up.buf).await.is_err() {
                return;
            }
            up.buf.clear();
        }
        let splice = crate::splice::splice(&mut self.r, &mut self.w, &mut up.r, &mut up.w);
        let closed = match self.in_flight.as_mut() {
            // A migration's drain timeout closes an upgraded connection
            // (a WebSocket) rather than let it hold the pause open.
            Some(g) => {
                tokio::select! {
                    () = splice => false,
                    () = g.closing() => true,
                }
            }
            None => {
                splice.await;
                false
            }
        };
        if closed && let Some(g) = self.in_flight.take() {
            debug!(client = %self.peer, "upgraded connection closed for a site migration");
            drop(up);
            crate::splice::end_for_migration(&mut self.r, &mut self.w, g).await;
        }
    }
}

enum Exchanged {
    Done {
        upstream_reusable: bool,
        client_may_continue: bool,
    },
    Upgraded,
}

enum Failure {
    /// The upstream failed before sending a byte of a response.
    NothingReceived(io::Error),
    /// The response head was invalid; nothing was sent to the client.
    BadResponse(String),
    /// No response head in time; nothing was sent to the client.
    Timeout,
    /// Failed after the response started, or the client failed.
    Broken,
}

/// Where a message body stands.
#[derive(Debug)]
enum BodyState {
    Done,
    Length(u64),
    Chunked(ChunkedDecoder),
}

impl BodyState {
    fn for_request(b: RequestBody) -> Self {
        match b {
            RequestBody::None | RequestBody::ContentLength(0) => BodyState::Done,
            RequestBody::ContentLength(n) => BodyState::Length(n),
            RequestBody::Chunked => BodyState::Chunked(ChunkedDecoder::new()),
        }
    }

    fn is_done(&self) -> bool {
        matches!(self, BodyState::Done)
    }

    /// How many bytes of `data` belong to the body; moves past them.
    fn advance(&mut self, data: &[u8]) -> Result<usize, crate::chunked::ChunkedError> {
        match self {
            BodyState::Done => Ok(0),
            BodyState::Length(left) => {
                // min() keeps the result within data.len(), a usize.
                let n = (*left).min(data.len() as u64) as usize;
                *left -= n as u64;
                if *left == 0 {
                    *self = BodyState::Done;
                }
                Ok(n)
            }
            BodyState::Chunked(d) => {
                let p = d.feed(data)?;
                if p.done {
                    *self = BodyState::Done;
                }
                Ok(p.consumed)
            }
        }
    }

    /// The most bytes worth reading next: never past a known end, so that
    /// the next message's bytes stay in the socket when they can.
    fn want(&self) -> usize {
        match self {
            BodyState::Done => 0,
            // min() keeps the result within IO_BUF, a usize.
            BodyState::Length(left) => (*left).min(IO_BUF as u64) as usize,
            BodyState::Chunked(_) => IO_BUF,
        }
    }
}

/// Client → upstream: the rest of the request body.
async fn send_body<R, W>(
    r: &mut R,
    buf: &mut Vec<u8>,
    w: &mut W,
    body: &mut BodyState,
    io_timeout: Duration,
) -> io::Result<()>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    if body.is_done() {
        return Ok(());
    }
    let mut scratch = vec![0u8; IO_BUF];
    loop {
        let want = body.want();
        let n = timeout(io_timeout, r.read(&mut scratch[..want]))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request body stalled"))??;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let used = body
            .advance(&scratch[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        w.write_all(&scratch[..used]).await?;
        if used < n {
            // A pipelined next request: it waits for its turn.
            buf.extend_from_slice(&scratch[used..n]);
        }
        if body.is_done() {
            return w.flush().await;
        }
    }
}

async fn read_more<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(IO_BUF);
    }
    r.read_buf(buf).await
}

/// Upstream → client: interim responses, then the final response and its
/// body.
async fn relay_response<R, W>(
    ur: &mut R,
    ubuf: &mut Vec<u8>,
    w: &mut W,
    method: Method,
    cfg: &crate::engine::ProxyConfig,
) -> Result<Exchanged, Failure>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut wrote = false;
    loop {
        let deadline = Instant::now() + cfg.response_timeout;
        let head = loop {
            if !ubuf.is_empty() {
                match parse_response(ubuf, method, &cfg.limits) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(e) if wrote => {
                        debug!(error = %e, "invalid response head after an interim one");
                        return Err(Failure::Broken);
                    }
                    Err(e) => return Err(Failure::BadResponse(e.to_string())),
                }
            }
            match timeout_at(deadline, read_more(ur, ubuf)).await {
                Err(_) if wrote => return Err(Failure::Broken),
                Err(_) => return Err(Failure::Timeout),
                Ok(Ok(n)) if n > 0 => {}
                Ok(res) => {
                    let e = res
                        .err()
                        .unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into());
                    return Err(if wrote {
                        Failure::Broken
                    } else if ubuf.is_empty() {
                        Failure::NothingReceived(e)
                    } else {
                        Failure::BadResponse("response head cut short".into())
                    });
                }
            }
        };
        let mut body = match head.body {
            ResponseBody::None | ResponseBody::Tunnel | ResponseBody::ContentLength(0) => {
                BodyState::Done
            }
            ResponseBody::ContentLength(n) => BodyState::Length(n),
            ResponseBody::Chunked => BodyState::Chunked(ChunkedDecoder::new()),
            // Counted as "everything": the end is the upstream's EOF.
            ResponseBody::UntilClose => BodyState::Length(u64::MAX),
        };
        let hl = head.head_len;
        let used = match body.advance(&ubuf[hl..]) {
            Ok(n) => n,
            Err(_) => return Err(Failure::BadResponse("malformed chunked body".into())),
        };
        // The head and the body bytes read with it leave in one write.
        if w.write_all(&ubuf[..hl + used]).await.is_err() {
            return Err(Failure::Broken);
        }
        wrote = true;
        ubuf.drain(..hl + used);
        if head.is_interim() {
            if w.flush().await.is_err() {
                return Err(Failure::Broken);
            }
            continue;
        }
        if head.body == ResponseBody::Tunnel {
            return Ok(Exchanged::Upgraded);
        }
        let until_close = head.body == ResponseBody::UntilClose;
        while !body.is_done() {
            let n = match timeout(cfg.io_timeout, read_more(ur, ubuf)).await {
                Ok(Ok(n)) => n,
                _ => return Err(Failure::Broken),
            };
            if n == 0 {
                if until_close {
                    break;
                }
                return Err(Failure::Broken);
            }
            let used = body.advance(ubuf).map_err(|_| Failure::Broken)?;
            if w.write_all(&ubuf[..used]).await.is_err() {
                return Err(Failure::Broken);
            }
            ubuf.drain(..used);
        }
        if w.flush().await.is_err() {
            return Err(Failure::Broken);
        }
        return Ok(Exchanged::Done {
            upstream_reusable: head.keep_alive && ubuf.is_empty(),
            client_may_continue: !until_close,
        });
    }
}

/// Appends `X-Forwarded-For` and `Forwarded` (RFC 7239) lines for `peer`.
fn push_forwarded(out: &mut Vec<u8>, peer: SocketAddr, host: Option<&[u8]>) {
    let ip = peer.ip();
    let mut s = String::with_capacity(128);
    let _ = write!(s, "X-Forwarded-For: {ip}\r\nForwarded: for=");
    match ip {
        std::net::IpAddr::V4(a) => {
            let _ = write!(s, "{a}");
        }
        std::net::IpAddr::V6(a) => {
            let _ = write!(s, "\"[{a}]\"");
        }
    }
    s.push_str(";proto=http");
    if let Some(h) = host {
        // The Host value was checked by the parser (letters, digits, '.',
        // '-', '_', ':', '[', ']'): nothing to escape inside quotes.
        s.push_str(";host=\"");
        s.push_str(&String::from_utf8_lossy(h));
        s.push('"');
    }
    s.push_str("\r\n");
    out.extend_from_slice(s.as_bytes());
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}
