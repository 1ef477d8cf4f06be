//! ICMP errors about a client's flow (destination unreachable, including
//! fragmentation needed, time exceeded and parameter problem), translated
//! through the header they quote (RFC 5508, section 4.2), both ways:
//!
//! - from the remote side to the client (`rev_nat_v4_icmp_error`): routers
//!   beyond the gateway send them to the gateway's address about a packet
//!   it sent from a NAT port; the client must get them as if it had been
//!   addressed itself, or path MTU discovery and traceroute stop at the
//!   gateway;
//! - from the client to the remote (`snat_v4_icmp_error`): a client's port
//!   unreachable (its socket closed) about a reply, as Linux's NAT passes
//!   such RELATED packets on, so the remote stops sending and the binding
//!   can expire.
//!
//! What changes: the error's own address (a NAT hop), the quoted address
//! the NAT rewrote, with the quoted header's checksum, the quoted port or
//! echo identifier, and the quoted transport checksum when the quote holds
//! it. The ICMP checksum covers the quote, so it follows every change in
//! it. Other fields (the "next-hop MTU", the parameter problem's pointer)
//! need no change.
use aya_ebpf::programs::TcContext;
use egress_common::{
    checksum::nat_checksum_update,
    config::GatewayConfig,
    conntrack::{FlowTuple, NatEntry},
    counters::Counter,
};

use crate::{
    conntrack::{self, Half},
    headers::{
        Ipv4Header, ETH_HLEN, ICMP_CSUM_OFF, ICMP_DEST_UNREACHABLE, ICMP_ECHO_REQUEST, ICMP_HLEN,
        ICMP_ID_OFF, ICMP_PARAMETER_PROBLEM, ICMP_TIME_EXCEEDED, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP,
        IPV4_HLEN, IP_CSUM_OFF, IP_DST_OFF, IP_SRC_OFF, TUNNEL_OVERHEAD,
    },
    maps::count,
    nat::{
        rewrite::{nat_v4_rewrite_headers, End},
        to_client::{tunnel_to_client, Returned, IP_OFF, L4_OFF},
    },
    tunnel::encap::TunnelTarget,
};

/// Whether an ICMP error type is one this module translates.
#[inline(always)]
pub fn is_translated_error(icmp_type: u8) -> bool {
    icmp_type == ICMP_DEST_UNREACHABLE
        || icmp_type == ICMP_TIME_EXCEEDED
        || icmp_type == ICMP_PARAMETER_PROBLEM
}

/// The flow an ICMP error quotes, as the quoted packet names it.
struct Quote {
    ip: Ipv4Header,
    /// The quoted source and destination ports (TCP, UDP), or the echo
    /// identifier as both (ICMP echo).
    src_port_be: u16,
    dst_port_be: u16,
    /// Where the NAT's port sits in the quoted L4 header.
    port_off: usize,
}

/// Reads the quote at `quoted_ip_off`: an option-less IPv4 header and the
/// ports of TCP or UDP, or an echo request's identifier (`echo_type`: the
/// echo type the quoted packet must have). A later fragment's quote has
/// none: what sits where its ports would is data, a tenant's to choose,
/// and read as ports it could name another client's flow. Linux's
/// conntrack does not look into it either.
#[inline(always)]
fn load_quote(ctx: &TcContext, quoted_ip_off: usize, echo_type: u8, dst_side: bool) -> Option<Quote> {
    let ip = Ipv4Header::load(ctx, quoted_ip_off).ok()?;
    if ip.version_ihl != 0x45 || ip.is_later_fragment() {
        return None;
    }
    let l4: [u8; 8] = ctx.load(quoted_ip_off + IPV4_HLEN).ok()?;
    match ip.protocol {
        IPPROTO_TCP | IPPROTO_UDP => Some(Quote {
            ip,
            src_port_be: u16::from_ne_bytes([l4[0], l4[1]]),
            dst_port_be: u16::from_ne_bytes([l4[2], l4[3]]),
            port_off: if dst_side { 2 } else { 0 },
        }),
        IPPROTO_ICMP if l4[0] == echo_type => {
            let id_be = u16::from_ne_bytes([l4[4], l4[5]]);
            Some(Quote { ip, src_port_be: id_be, dst_port_be: id_be, port_off: ICMP_ID_OFF })
        }
        _ => None,
    }
}

/// An ICMP error of `icmp_type` addressed to the gateway (`outer` has no
/// options; the caller checked). Ours when it quotes a packet we sent from
/// a NAT port and is of a type we translate; anything else is the pod's.
#[inline(always)]
pub fn rev_nat_v4_icmp_error(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    outer: &Ipv4Header,
    icmp_type: u8,
) -> Result<Returned, Counter> {
    if !is_translated_error(icmp_type) {
        return Ok(Returned::NotOurs);
    }
    let quoted_ip_off = L4_OFF + ICMP_HLEN;
    // The quoted flow, as the gateway sent it: NAT port (or echo id) first.
    let Some(quote) = load_quote(ctx, quoted_ip_off, ICMP_ECHO_REQUEST, false) else {
        return Ok(Returned::NotOurs);
    };
    let nat_port_be = quote.src_port_be;
    if quote.ip.src_be != cfg.gateway_ip_be || !cfg.is_nat_port(u16::from_be(nat_port_be)) {
        return Ok(Returned::NotOurs);
    }
    let remote_port_be = if quote.ip.protocol == IPPROTO_ICMP { 0 } else { quote.dst_port_be };
    let tuple =
        FlowTuple::new(quote.ip.dst_be, quote.ip.src_be, remote_port_be, nat_port_be, quote.ip.protocol);
    // An error does not keep its flow alive: no refresh, no state change.
    let Some((_, entry)) = conntrack::ct_lookup::<NatEntry>(cfg, Half::Reply, &tuple, conntrack::now_ns())
    else {
        // An echo identifier in the NAT range may be the gateway pod's own
        // ping (as for echo replies, `rev_nat`): its stack's business.
        return if quote.ip.protocol == IPPROTO_ICMP {
            Ok(Returned::NotOurs)
        } else {
            Err(Counter::DropNoMapping)
        };
    };
    if outer.ttl <= 1 {
        return Err(Counter::DropTtlExceeded);
    }
    // Routers quote at most 576 bytes in all (RFC 1812), which always fits;
    // a longer quote would not, once encapsulated.
    let bytes = ctx.len() - ETH_HLEN as u32;
    if cfg.mtu != 0 && bytes + TUNNEL_OVERHEAD as u32 > cfg.mtu {
        return Err(Counter::DropTooBigForTunnel);
    }
    let quote_len = bytes - IPV4_HLEN as u32 - ICMP_HLEN as u32;
    rewrite_quote(
        ctx,
        L4_OFF,
        &quote,
        End::Source,
        entry.client_ip_be,
        nat_port_be,
        entry.client_port_be,
        quote_len,
    )?;
    // The error itself now goes to the client: a router hop.
    nat_v4_rewrite_headers(ctx, IP_OFF, outer, End::Destination, entry.client_ip_be, 0, 0)?;
    tunnel_to_client(ctx, cfg, &TunnelTarget::of(&entry), entry.client_id, 1, bytes as u64)?;
    count(Counter::IcmpErrorToClient);
    Ok(Returned::ToClient)
}

/// A client's ICMP error, still in its tunnel (`inner` is the decapsulated
/// packet's header at `inner_ip_off`), about a reply of one of its flows:
/// rewritten as the gateway's own, about the packet as the gateway sent it
/// on. The caller strips the tunnel and sends it out. Errors about anything
/// else are dropped: a client may only speak for its own flows.
#[inline(always)]
pub fn snat_v4_icmp_error(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    inner_ip_off: usize,
    inner: &Ipv4Header,
) -> Result<(), Counter> {
    let icmp_off = inner_ip_off + IPV4_HLEN;
    // The quoted reply, as the client got it: remote -> client port.
    let quote = load_quote(ctx, icmp_off + ICMP_HLEN, egress_common::ip::ICMP_ECHO_REPLY, true)
        .ok_or(Counter::DropUnsupportedProtocol)?;
    if quote.ip.dst_be != inner.src_be {
        return Err(Counter::DropSpoofedInnerSource);
    }
    let remote_port_be = if quote.ip.protocol == IPPROTO_ICMP { 0 } else { quote.src_port_be };
    let client_port_be = quote.dst_port_be;
    let tuple =
        FlowTuple::new(quote.ip.dst_be, quote.ip.src_be, client_port_be, remote_port_be, quote.ip.protocol);
    let Some((_, entry)) = conntrack::ct_lookup::<NatEntry>(cfg, Half::Original, &tuple, conntrack::now_ns())
    else {
        return Err(Counter::DropNoMapping);
    };
    let quote_len = (inner.total_len as u32).saturating_sub((IPV4_HLEN + ICMP_HLEN) as u32);
    rewrite_quote(
        ctx,
        icmp_off,
        &quote,
        End::Destination,
        cfg.gateway_ip_be,
        client_port_be,
        entry.nat_port_be,
        quote_len,
    )?;
    nat_v4_rewrite_headers(ctx, inner_ip_off, inner, End::Source, cfg.gateway_ip_be, 0, 0)?;
    count(Counter::IcmpErrorToRemote);
    Ok(())
}

/// Rewrites the quote of the ICMP message at `icmp_off` (`quote_len` bytes
/// from the quoted IPv4 header on): `end`'s address becomes `new_addr_be`
/// and its port (or echo identifier) `old_port_be` becomes `new_port_be`,
/// with the quoted IPv4 checksum, the quoted transport checksum when the
/// quote holds it (UDP's unless it is 0, "none"), and the ICMP checksum.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn rewrite_quote(
    ctx: &TcContext,
    icmp_off: usize,
    quote: &Quote,
    end: End,
    new_addr_be: u32,
    old_port_be: u16,
    new_port_be: u16,
    quote_len: u32,
) -> Result<(), Counter> {
    let failed = |_| Counter::DropRewriteFailed;
    let icmp_csum = icmp_off + ICMP_CSUM_OFF;
    let quoted_ip_off = icmp_off + ICMP_HLEN;
    let quoted_l4_off = quoted_ip_off + IPV4_HLEN;
    let (addr_off, old_addr_be) = match end {
        End::Source => (IP_SRC_OFF, quote.ip.src_be),
        End::Destination => (IP_DST_OFF, quote.ip.dst_be),
    };
    // The quoted IPv4 header: the address, then its own checksum, each
    // change also applied to the ICMP checksum that covers them.
    let old_quoted_csum: u16 = ctx.load(quoted_ip_off + IP_CSUM_OFF).map_err(failed)?;
    ctx.l3_csum_replace(quoted_ip_off + IP_CSUM_OFF, old_addr_be as u64, new_addr_be as u64, 4)
        .map_err(failed)?;
    let new_quoted_csum: u16 = ctx.load(quoted_ip_off + IP_CSUM_OFF).map_err(failed)?;
    ctx.l4_csum_replace(icmp_csum, old_addr_be as u64, new_addr_be as u64, 4).map_err(failed)?;
    ctx.l4_csum_replace(icmp_csum, old_quoted_csum as u64, new_quoted_csum as u64, 2).map_err(failed)?;
    ctx.store(quoted_ip_off + addr_off, &new_addr_be, 0).map_err(failed)?;
    // The quoted transport checksum: UDP's within any quote, TCP's in a
    // long one; the address is in its pseudo-header (not ICMP's).
    let csum_off = match quote.ip.protocol {
        IPPROTO_UDP => 6,
        IPPROTO_TCP => 16,
        _ => 2,
    };
    if quote_len >= (IPV4_HLEN + csum_off + 2) as u32 {
        let old_csum_be: u16 = ctx.load(quoted_l4_off + csum_off).map_err(failed)?;
        if !(quote.ip.protocol == IPPROTO_UDP && old_csum_be == 0) {
            let new_csum = nat_checksum_update(
                u16::from_be(old_csum_be),
                u32::from_be(old_addr_be),
                u32::from_be(new_addr_be),
                u16::from_be(old_port_be),
                u16::from_be(new_port_be),
                quote.ip.protocol != IPPROTO_ICMP,
            );
            let new_csum_be = new_csum.to_be();
            ctx.l4_csum_replace(icmp_csum, old_csum_be as u64, new_csum_be as u64, 2).map_err(failed)?;
            ctx.store(quoted_l4_off + csum_off, &new_csum_be, 0).map_err(failed)?;
        }
    }
    if old_port_be != new_port_be {
        ctx.l4_csum_replace(icmp_csum, old_port_be as u64, new_port_be as u64, 2).map_err(failed)?;
        ctx.store(quoted_l4_off + quote.port_off, &new_port_be, 0).map_err(failed)?;
    }
    Ok(())
}
