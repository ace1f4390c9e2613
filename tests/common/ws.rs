//! A minimal WebSocket client for tests, and the echo app
//! (`tests/fixtures/ws_echo.py`: a greeting, then every message echoed
//! with `echo: ` in front; a close answered with a close).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

pub const ECHO_APP: &str = include_str!("../fixtures/ws_echo.py");

/// The handshake `dGhlIHNhbXBsZSBub25jZQ==` asks for.
pub const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Sends the handshake for `host` on `s`; returns the answer's head.
pub fn handshake(s: &mut TcpStream, host: &str) -> String {
    write!(
        s,
        "GET /chat HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .expect("write the handshake");
    read_head(s)
}

pub fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16384 {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Writes one masked client frame.
pub fn write_frame(s: &mut TcpStream, op: u8, payload: &[u8]) {
    try_write_frame(s, op, payload).expect("write frame");
}

pub fn try_write_frame(s: &mut TcpStream, op: u8, payload: &[u8]) -> std::io::Result<()> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = vec![0x80 | op];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&f)
}

/// Reads one server frame: `Ok(None)` if the connection ended cleanly (a
/// FIN) before a frame began; an error for a reset, a timeout, or an end
/// inside a frame.
pub fn read_frame(s: &mut TcpStream) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut h = [0u8; 2];
    let mut got = 0;
    while got < 2 {
        match s.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut n = u64::from(h[1] & 127);
    if n == 126 {
        let mut l = [0u8; 2];
        s.read_exact(&mut l)?;
        n = u64::from(u16::from_be_bytes(l));
    } else if n == 127 {
        let mut l = [0u8; 8];
        s.read_exact(&mut l)?;
        n = u64::from_be_bytes(l);
    }
    assert!(h[1] & 0x80 == 0, "a server frame is not masked");
    let mut p = vec![0u8; usize::try_from(n).expect("small frame")];
    s.read_exact(&mut p)?;
    Ok(Some((h[0] & 15, p)))
}
