//! The one header rewrite of both directions: an address and a port (or an
//! ICMP echo identifier), with their checksums, and the TTL of a router hop.
use aya_ebpf::programs::TcContext;
use egress_common::counters::Counter;

use crate::{
    csum,
    headers::{Ipv4Header, ICMP_ID_OFF, IPPROTO_ICMP, IPV4_HLEN},
};

/// Which end of the packet NAT rewrites.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// SNAT: source address and port (a client's packet going out).
    Source,
    /// Reverse NAT: destination address and port (a reply coming back).
    Destination,
}

/// Rewrites the IPv4 packet at `ip_off` (described by `ip`, no options):
/// `end`'s address becomes `new_addr_be` and its port (TCP, UDP) or echo
/// identifier (ICMP) `old_port_be` becomes `new_port_be`; the TTL drops by
/// one (the caller has checked it is above 1). Every checksum follows.
#[inline(always)]
pub fn nat_v4_rewrite_headers(
    ctx: &TcContext,
    ip_off: usize,
    ip: &Ipv4Header,
    end: End,
    new_addr_be: u32,
    old_port_be: u16,
    new_port_be: u16,
) -> Result<(), Counter> {
    let l4_off = ip_off + IPV4_HLEN;
    let (old_addr_be, port_off) = match end {
        End::Source => (ip.src_be, 0),
        End::Destination => (ip.dst_be, 2),
    };
    let port_off = if ip.protocol == IPPROTO_ICMP { ICMP_ID_OFF } else { port_off };
    csum::rewrite_l4_port(ctx, l4_off, port_off, ip.protocol, old_port_be, new_port_be)?;
    csum::update_l4_for_addr(ctx, l4_off, ip.protocol, old_addr_be, new_addr_be)?;
    rewrite_ipv4_hop(ctx, ip_off, ip, end, new_addr_be)
}

/// The IPv4 header's part of a NAT hop: `end`'s address becomes
/// `new_addr_be`, the TTL drops by one, the header checksum follows.
#[inline(always)]
pub fn rewrite_ipv4_hop(
    ctx: &TcContext,
    ip_off: usize,
    ip: &Ipv4Header,
    end: End,
    new_addr_be: u32,
) -> Result<(), Counter> {
    let (src_be, dst_be) = match end {
        End::Source => (new_addr_be, ip.dst_be),
        End::Destination => (ip.src_be, new_addr_be),
    };
    csum::rewrite_ipv4_hop(ctx, ip_off, ip, src_be, dst_be)
}
