//! The tunnel seam: how a node that is not a site's master hands a
//! connection to the master.
//!
//! The daemon implements [`Tunnels`] over the QUIC mesh: `open` starts a
//! stream to the master node and writes the [`TunnelHeader`] in its wire
//! form ([`TunnelHeader::encode`]); the master reads it back
//! ([`read_header`]) and gives the stream to [`crate::Proxy::serve_tunnel`],
//! which handles it through the same local path as a connection that
//! arrived at the master itself.
//!
//! After the header the stream carries the client's bytes unchanged: for
//! [`Protocol::Http`] a sequence of HTTP/1.1 requests for the header's site
//! (the ingress node may reuse one tunnel for several requests), for
//! [`Protocol::Tls`] the raw TLS connection, ClientHello first.
//!
//! # Wire form, version 1
//!
//! ```text
//! u16  length of the rest (big endian), at most MAX_HEADER_LEN
//! u8   version = 1
//! u8   protocol: 1 = HTTP, 2 = TLS
//! u8   site name length n (1..=255), then n bytes of UTF-8
//! u8   address family: 4 or 6, then 4 or 16 bytes of address
//! u16  client port (big endian)
//! ...  bytes a later minor revision may add; version-1 readers skip them
//! ```
//!
//! A reader refuses any other version: a sender must not use a version its
//! peer has not announced (the daemon gossips what it speaks).

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// The version this crate writes and reads.
pub const TUNNEL_VERSION: u8 = 1;
/// The largest length field a reader accepts.
pub const MAX_HEADER_LEN: usize = 512;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// The protocol a tunneled stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Tls,
}

/// What the master needs to know before the client's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TunnelHeader {
    pub site: String,
    pub protocol: Protocol,
    /// The client as the ingress node saw it; the master reports it in
    /// `X-Forwarded-For` / `Forwarded`.
    pub client_addr: SocketAddr,
}

/// Why a header was refused. The stream must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelHeaderError {
    #[error("tunnel header length {0} is over the limit of {MAX_HEADER_LEN}")]
    TooLong(usize),
    #[error("unsupported tunnel header version {0}")]
    Version(u8),
    #[error("unknown tunnel protocol {0}")]
    Protocol(u8),
    #[error("invalid site name in tunnel header: {0}")]
    Site(&'static str),
    #[error("unknown address family {0} in tunnel header")]
    Family(u8),
    #[error("tunnel header truncated")]
    Truncated,
}

impl TunnelHeader {
    /// The wire form. Fails only for a site name that is empty or longer
    /// than 255 bytes (checked names never are).
    pub fn encode(&self) -> Result<Vec<u8>, TunnelHeaderError> {
        let site = self.site.as_bytes();
        if site.is_empty() {
            return Err(TunnelHeaderError::Site("empty"));
        }
        let Ok(site_len) = u8::try_from(site.len()) else {
            return Err(TunnelHeaderError::Site("longer than 255 bytes"));
        };
        let mut out = Vec::with_capacity(2 + 3 + site.len() + 19);
        out.extend_from_slice(&[0, 0, TUNNEL_VERSION]);
        out.push(match self.protocol {
            Protocol::Http => 1,
            Protocol::Tls => 2,
        });
        out.push(site_len);
        out.extend_from_slice(site);
        match self.client_addr.ip() {
            IpAddr::V4(a) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.push(6);
                out.extend_from_slice(&a.octets());
            }
        }
        out.extend_from_slice(&self.client_addr.port().to_be_bytes());
        // At most 3 + 255 + 17 + 2 bytes follow the length: fits in u16.
        let len =
            u16::try_from(out.len() - 2).map_err(|_| TunnelHeaderError::TooLong(out.len()))?;
        out[..2].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }

    /// Decodes a header from the front of `buf`: `Ok(None)` when more bytes
    /// are needed, else the header and how many bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(TunnelHeader, usize)>, TunnelHeaderError> {
        let Some(len) = buf.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        if len > MAX_HEADER_LEN {
            return Err(TunnelHeaderError::TooLong(len));
        }
        let Some(body) = buf.get(2..2 + len) else {
            return Ok(None);
        };
        Ok(Some((Self::decode_body(body)?, 2 + len)))
    }

    fn decode_body(body: &[u8]) -> Result<TunnelHeader, TunnelHeaderError> {
        let mut r = Reader(body);
        let version = r.u8()?;
        if version != TUNNEL_VERSION {
            return Err(TunnelHeaderError::Version(version));
        }
        let protocol = match r.u8()? {
            1 => Protocol::Http,
            2 => Protocol::Tls,
            p => return Err(TunnelHeaderError::Protocol(p)),
        };
        let site_len = usize::from(r.u8()?);
        if site_len == 0 {
            return Err(TunnelHeaderError::Site("empty"));
        }
        let site = std::str::from_utf8(r.take(site_len)?)
            .map_err(|_| TunnelHeaderError::Site("not UTF-8"))?
            .to_owned();
        let ip = match r.u8()? {
            4 => {
                let b: [u8; 4] = r.array()?;
                IpAddr::V4(Ipv4Addr::from(b))
            }
            6 => {
                let b: [u8; 16] = r.array()?;
                IpAddr::V6(Ipv6Addr::from(b))
            }
            f => return Err(TunnelHeaderError::Family(f)),
        };
        let port = u16::from_be_bytes(r.array()?);
        Ok(TunnelHeader {
            site,
            protocol,
            client_addr: SocketAddr::new(ip, port),
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TunnelHeaderError> {
        if self.0.len() < n {
            return Err(TunnelHeaderError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, TunnelHeaderError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TunnelHeaderError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
}

/// Reads one header from the front of a tunneled stream, consuming exactly
/// its bytes (the client's bytes that follow stay in the stream).
pub async fn read_header<R: AsyncRead + Unpin + ?Sized>(r: &mut R) -> io::Result<TunnelHeader> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len).await?;
    let n = usize::from(u16::from_be_bytes(len));
    if n > MAX_HEADER_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            TunnelHeaderError::TooLong(n),
        ));
    }
    let mut buf = vec![0u8; 2 + n];
    buf[..2].copy_from_slice(&len);
    r.read_exact(&mut buf[2..]).await?;
    match TunnelHeader::decode(&buf) {
        Ok(Some((h, _))) => Ok(h),
        Ok(None) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            TunnelHeaderError::Truncated,
        )),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    }
}

/// Opens streams to other nodes. The daemon implements it over the QUIC
/// mesh; [`crate::testing`] has in-process and plain-TCP versions.
///
/// `open` returns once the header is on its way; the stream's two halves
/// carry the client's bytes. An error means nothing reached the master.
pub trait Tunnels: Send + Sync + 'static {
    fn open<'a>(
        &'a self,
        node: &'a str,
        header: TunnelHeader,
    ) -> BoxFuture<'a, io::Result<(BoxRead, BoxWrite)>>;
}

/// For a node that forwards nothing (single-node setups, tests of the
/// local path): every open fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTunnels;

impl Tunnels for NoTunnels {
    fn open<'a>(
        &'a self,
        node: &'a str,
        _header: TunnelHeader,
    ) -> BoxFuture<'a, io::Result<(BoxRead, BoxWrite)>> {
        Box::pin(async move {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("no tunnels configured (to node '{node}')"),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(site: &str, addr: &str) -> TunnelHeader {
        TunnelHeader {
            site: site.into(),
            protocol: Protocol::Http,
            client_addr: addr.parse().expect("test address"),
        }
    }

    #[test]
    fn round_trip_and_prefixes() {
        for h in [
            header("blog", "192.0.2.7:51000"),
            header(&"s".repeat(255), "[2001:db8::1]:443"),
            TunnelHeader {
                protocol: Protocol::Tls,
                ..header("x", "10.0.0.1:1")
            },
        ] {
            let wire = h.encode().expect("valid header");
            for cut in 0..wire.len() {
                assert_eq!(TunnelHeader::decode(&wire[..cut]), Ok(None), "cut {cut}");
            }
            let mut more = wire.clone();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(TunnelHeader::decode(&more), Ok(Some((h, wire.len()))));
        }
    }

    #[test]
    fn version_one_layout() {
        let wire = header("ab", "1.2.3.4:258").encode().expect("valid header");
        assert_eq!(wire, [0, 12, 1, 1, 2, b'a', b'b', 4, 1, 2, 3, 4, 1, 2]);
    }

    #[test]
    fn refusals() {
        assert!(header("", "1.2.3.4:1").encode().is_err());
        assert!(header(&"s".repeat(256), "1.2.3.4:1").encode().is_err());
        let ok = header("ab", "1.2.3.4:258").encode().expect("valid header");
        let mut v2 = ok.clone();
        v2[2] = 2;
        assert_eq!(
            TunnelHeader::decode(&v2),
            Err(TunnelHeaderError::Version(2))
        );
        let mut proto = ok.clone();
        proto[3] = 9;
        assert_eq!(
            TunnelHeader::decode(&proto),
            Err(TunnelHeaderError::Protocol(9))
        );
        let mut fam = ok.clone();
        fam[7] = 5;
        assert_eq!(
            TunnelHeader::decode(&fam),
            Err(TunnelHeaderError::Family(5))
        );
        let mut short = ok.clone();
        short[1] = 5;
        assert_eq!(
            TunnelHeader::decode(&short),
            Err(TunnelHeaderError::Truncated)
        );
        assert_eq!(
            TunnelHeader::decode(&[0xff, 0xff]),
            Err(TunnelHeaderError::TooLong(0xffff))
        );
        // A later revision's extra bytes are skipped.
        let mut ext = ok.clone();
        ext[1] += 3;
        ext.extend_from_slice(&[7, 7, 7]);
        assert!(matches!(TunnelHeader::decode(&ext), Ok(Some((_, 17)))));
    }

    #[test]
    fn decoder_never_panics_on_junk() {
        // A small deterministic sweep over short inputs.
        let mut x: u32 = 1;
        for _ in 0..20_000 {
            let mut buf = Vec::new();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let len = (x % 40) as usize;
            for i in 0..len {
                buf.push((x.rotate_left(i as u32) & 0xff) as u8);
            }
            if buf.len() >= 3 {
                buf[0] = 0;
                buf[2] = 1;
            }
            let _ = TunnelHeader::decode(&buf);
        }
    }
}
