//! The admin API's answers: JSON bodies, and `{"error": "..."}` for a
//! refusal.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use serde::Serialize;

/// The body of every admin API answer.
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

pub fn error(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    json(status, &ApiError { error: msg.into() })
}
