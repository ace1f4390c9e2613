//! Forwarding a request to its backend or tunnel: the upstream
//! connection (pooled), the exchange, and upgraded connections.

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use super::body::{BodyState, Exchanged, Failure, push_forwarded, relay_response, send_body};
use super::client::{Client, Next};
use crate::engine::{ConnectError, Proxy};
use crate::http::{Method, RequestHead, reason};
use crate::pool::{Upstream, UpstreamKey};
use crate::tunnel::{Protocol, TunnelHeader};

impl<R, W> Client<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    /// Sends the request to `key` and relays the answer.
    pub(super) async fn forward(
        &mut self,
        proxy: &Proxy,
        head: RequestHead,
        key: UpstreamKey,
    ) -> Next {
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

    pub(super) async fn upstream(
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

    pub(super) fn put_upstream(&mut self, proxy: &Proxy, key: UpstreamKey, up: Upstream) {
        match key {
            UpstreamKey::Tcp(_) => proxy.pool().put(key, up),
            UpstreamKey::Tunnel { .. } if up.buf.is_empty() => self.tunnel = Some((key, up)),
            UpstreamKey::Tunnel { .. } => {}
        }
    }

    /// Moves the request body up and the response down, at the same time.
    pub(super) async fn exchange(
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
    pub(super) async fn splice_upgraded(&mut self, mut up: Upstream) {
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
