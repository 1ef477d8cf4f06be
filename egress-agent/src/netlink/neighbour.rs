//! Neighbours: the tunnel's one permanent entry.
use std::net::Ipv4Addr;

use anyhow::{Context, Result};

use super::{attribute, Netlink, CREATE_OR_REPLACE};

const RTM_NEWNEIGH: u16 = 28;
const NDA_DST: u16 = 1;
const NDA_LLADDR: u16 = 2;
const NUD_PERMANENT: u16 = 0x80;

/// `address` is at `mac` on link `device`, for good: no resolution, no
/// expiry.
pub fn replace_permanent(netlink: &Netlink, device: u32, address: Ipv4Addr, mac: [u8; 6]) -> Result<()> {
    // struct ndmsg: family, padding, ifindex, state, flags, type.
    let mut request = vec![libc::AF_INET as u8, 0, 0, 0];
    request.extend_from_slice(&(device as i32).to_ne_bytes());
    request.extend_from_slice(&NUD_PERMANENT.to_ne_bytes());
    request.extend_from_slice(&[0, 0]);
    request.extend_from_slice(&attribute(NDA_DST, &address.octets()));
    request.extend_from_slice(&attribute(NDA_LLADDR, &mac));
    netlink
        .request(RTM_NEWNEIGH, CREATE_OR_REPLACE, &request)
        .with_context(|| format!("setting the tunnel's neighbour {address}"))
}
