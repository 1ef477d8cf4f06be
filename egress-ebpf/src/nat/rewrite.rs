//! The one header rewrite of both directions: an address and a port (or an
//! ICMP echo identifier), with their checksums, and the TTL of a router hop.
use aya_ebpf::programs::TcContext;
use egress_common::counters::Counter;

use crate::{
    csum,
    headers::{
        Ipv4Header, Ipv6Header, ICMP_ID_OFF, IPPROTO_ICMP, IPPROTO_ICMPV6, IPV4_HLEN, IPV6_DST_OFF,
        IPV6_HLEN, IPV6_HOP_LIMIT_OFF, IPV6_SRC_OFF,
    },
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

/// [`nat_v4_rewrite_headers`] for the IPv6 packet at `ip_off` (no
/// extension headers): `end`'s address becomes `new_addr`, its port or
/// ICMPv6 echo identifier `new_port_be`, the hop limit drops by one (the
/// caller has checked it is above 1). IPv6 has no header checksum; the
/// L4 one follows both changes.
#[inline(always)]
pub fn nat_v6_rewrite_headers(
    ctx: &TcContext,
    ip_off: usize,
    ip: &Ipv6Header,
    end: End,
    new_addr: &[u8; 16],
    old_port_be: u16,
    new_port_be: u16,
) -> Result<(), Counter> {
    let l4 = L4At { off: ip_off + IPV6_HLEN, protocol: ip.next_header };
    nat_v6_rewrite_headers_at(ctx, ip_off, ip, &l4, end, new_addr, old_port_be, new_port_be)
}

/// Where a packet's transport header is, and which it is: right after the
/// fixed IPv6 header, or after a fragment header (a first fragment).
pub struct L4At {
    pub off: usize,
    pub protocol: u8,
}

/// [`nat_v6_rewrite_headers`] for a transport header at `l4`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn nat_v6_rewrite_headers_at(
    ctx: &TcContext,
    ip_off: usize,
    ip: &Ipv6Header,
    l4: &L4At,
    end: End,
    new_addr: &[u8; 16],
    old_port_be: u16,
    new_port_be: u16,
) -> Result<(), Counter> {
    let (old_addr, port_off) = match end {
        End::Source => (&ip.src, 0),
        End::Destination => (&ip.dst, 2),
    };
    let port_off = if l4.protocol == IPPROTO_ICMPV6 { ICMP_ID_OFF } else { port_off };
    csum::rewrite_l4_port(ctx, l4.off, port_off, l4.protocol, old_port_be, new_port_be)?;
    csum::update_l4_for_addr6(ctx, l4.off, l4.protocol, old_addr, new_addr)?;
    rewrite_ipv6_hop(ctx, ip_off, ip, end, new_addr)
}

/// The IPv6 header's part of a NAT hop: `end`'s address becomes
/// `new_addr`, the hop limit drops by one (the caller has checked it is
/// above 1). IPv6 has no header checksum; a later fragment has no
/// transport header whose checksum would follow.
#[inline(always)]
pub fn rewrite_ipv6_hop(
    ctx: &TcContext,
    ip_off: usize,
    ip: &Ipv6Header,
    end: End,
    new_addr: &[u8; 16],
) -> Result<(), Counter> {
    let addr_off = match end {
        End::Source => IPV6_SRC_OFF,
        End::Destination => IPV6_DST_OFF,
    };
    ctx.store(ip_off + addr_off, new_addr, 0).map_err(|_| Counter::DropRewriteFailed)?;
    ctx.store(ip_off + IPV6_HOP_LIMIT_OFF, &(ip.hop_limit - 1), 0).map_err(|_| Counter::DropRewriteFailed)
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
