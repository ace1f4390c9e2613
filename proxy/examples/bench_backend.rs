//! A minimal keep-alive HTTP/1.1 backend for benchmarks: answers every
//! request head with a fixed body of `SIZE` bytes (default 1024).
//! Requests must not carry bodies (wrk's GETs do not).
//!
//! ```text
//! cargo run --release -p proxy --example bench_backend -- ADDR [SIZE]
//! ```

use std::error::Error;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().ok_or("usage: bench_backend ADDR [SIZE]")?;
    let size: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1024);
    let mut response =
        format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {size}\r\n\r\n")
            .into_bytes();
    response.extend(std::iter::repeat_n(b'x', size));
    let response: &'static [u8] = Box::leak(response.into_boxed_slice());
    let listener = TcpListener::bind(&addr).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut filled = 0;
            let mut out = Vec::new();
            loop {
                let n = match s.read(&mut buf[filled..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                filled += n;
                // Answer every complete head; keep a partial one.
                let mut start = 0;
                while let Some(p) = buf[start..filled].windows(4).position(|w| w == b"\r\n\r\n") {
                    start += p + 4;
                    out.extend_from_slice(response);
                }
                buf.copy_within(start..filled, 0);
                filled -= start;
                if filled == buf.len() {
                    return;
                }
                if !out.is_empty() {
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            }
        });
    }
}
