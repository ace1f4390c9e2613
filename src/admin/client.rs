//! The client side of the admin API, which the CLI commands use: one
//! request to the node whose data dir is given, over its Unix socket.

use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use crate::fail::{EXIT_NO_NODE, EXIT_RUNTIME, Fail, FailCode};

/// Prints one line for the user on stdout.
pub fn say(line: &str) {
    #[allow(clippy::print_stdout)] // CLI output is the point here
    {
        println!("{line}");
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
