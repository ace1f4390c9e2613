//! The addresses of simulated nodes: node `i` is `10.0.x.y` on the gossip
//! port, and back.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The gossip port every simulated node listens on.
pub const GOSSIP_PORT: u16 = 7280;

/// The address of node `index`: `10.0.x.y`, an IP address so that chitchat
/// never resolves a host name.
pub fn node_ip(index: usize) -> IpAddr {
    let n = index + 1;
    assert!(n < 1 << 16, "at most 65535 simulated nodes");
    IpAddr::V4(Ipv4Addr::new(10, 0, (n >> 8) as u8, (n & 0xff) as u8))
}

/// The index of the simulated node at `addr`, the inverse of [`node_ip`]
/// on the gossip port.
pub fn node_index(addr: SocketAddr) -> Option<usize> {
    match addr.ip() {
        IpAddr::V4(ip) if addr.port() == GOSSIP_PORT => match ip.octets() {
            [10, 0, hi, lo] if (hi, lo) != (0, 0) => {
                Some((usize::from(hi) << 8 | usize::from(lo)) - 1)
            }
            _ => None,
        },
        _ => None,
    }
}
