//! Neighbours: the tunnel's permanent entries, one a family.
use std::net::IpAddr;

use anyhow::{Context, Result};

use super::{attribute, Netlink, CREATE_OR_REPLACE};

const RTM_NEWNEIGH: u16 = 28;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NUD_PERMANENT: u16 = 0x80;

/// `address` is at `mac` on link `device`, for good: no resolution, no
/// expiry. An IPv6 next hop needs IPv6 on the link (not `disable_ipv6`).
pub fn replace_permanent(netlink: &Netlink, device: u32, address: IpAddr, mac: [u8; 6]) -> Result<()> {
    let (family, octets) = match address {
        IpAddr::V4(v4) => (libc::AF_INET, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6, v6.octets().to_vec()),
    };
    // struct ndmsg: family, padding, ifindex, state, flags, type.
    let mut request = vec![family as u8, 0, 0, 0];
    request.extend_from_slice(&(device as i32).to_ne_bytes());
    request.extend_from_slice(&NUD_PERMANENT.to_ne_bytes());
    request.extend_from_slice(&[0, 0]);
    request.extend_from_slice(&attribute(NDA_DST, &octets));
    request.extend_from_slice(&attribute(NDA_LLADDR, &mac));
    netlink
        .request(RTM_NEWNEIGH, CREATE_OR_REPLACE, &request)
        .with_context(|| format!("setting the tunnel's neighbour {address}"))
}
