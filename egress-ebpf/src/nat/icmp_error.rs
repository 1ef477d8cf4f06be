//! ICMP errors about a client's flow (destination unreachable, including
//! fragmentation needed, and time exceeded), translated back to the client
//! through the header they quote (RFC 5508, section 4.2). Routers beyond
//! the gateway send them to the gateway's address about a packet it sent
//! from a NAT port; the client must get them as if it had been addressed
//! itself, or path MTU discovery and traceroute stop at the gateway.
//!
//! What changes: the outer destination (gateway -> client), the quoted
//! source (gateway -> client) with the quoted header's checksum, and the
//! quoted source port or echo identifier (NAT port -> client's). The ICMP
//! checksum covers the quote, so it follows every change in it. The quoted
//! transport checksum is left as it is: the quote is usually truncated, and
//! no receiver checks it. The "next-hop MTU" needs no change: it is the MTU
//! of a link the client's own (decapsulated) packets cross.
use aya_ebpf::programs::TcContext;
use egress_common::{config::GatewayConfig, conntrack::FlowTuple, counters::Counter};

use crate::{
    conntrack::{self, Half},
    headers::{
        Ipv4Header, ETH_HLEN, ICMP_CSUM_OFF, ICMP_DEST_UNREACHABLE, ICMP_ECHO_REQUEST, ICMP_HLEN,
        ICMP_ID_OFF, ICMP_TIME_EXCEEDED, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV4_HLEN, IP_CSUM_OFF,
        IP_SRC_OFF, TUNNEL_OVERHEAD,
    },
    maps::count,
    nat::{
        rewrite::{nat_v4_rewrite_headers, End},
        to_client::{nat_v4_to_client, Returned, IP_OFF, L4_OFF},
    },
};

/// The quoted IPv4 header (ours never carry options) and what follows it.
const QUOTED_IP_OFF: usize = L4_OFF + ICMP_HLEN;
const QUOTED_L4_OFF: usize = QUOTED_IP_OFF + IPV4_HLEN;

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
    if icmp_type != ICMP_DEST_UNREACHABLE && icmp_type != ICMP_TIME_EXCEEDED {
        return Ok(Returned::NotOurs);
    }
    let Ok(quoted) = Ipv4Header::load(ctx, QUOTED_IP_OFF) else {
        return Ok(Returned::NotOurs);
    };
    if quoted.src_be != cfg.gateway_ip_be || quoted.version_ihl != 0x45 {
        return Ok(Returned::NotOurs);
    }
    // The quoted flow, as the gateway sent it: NAT port (or echo id) first.
    let Ok(l4) = ctx.load::<[u8; 8]>(QUOTED_L4_OFF) else {
        return Ok(Returned::NotOurs);
    };
    let (nat_port_be, remote_port_be, port_off) = match quoted.protocol {
        IPPROTO_TCP | IPPROTO_UDP => {
            (u16::from_ne_bytes([l4[0], l4[1]]), u16::from_ne_bytes([l4[2], l4[3]]), 0)
        }
        IPPROTO_ICMP if l4[0] == ICMP_ECHO_REQUEST => (u16::from_ne_bytes([l4[4], l4[5]]), 0, ICMP_ID_OFF),
        _ => return Ok(Returned::NotOurs),
    };
    if !cfg.is_nat_port(u16::from_be(nat_port_be)) {
        return Ok(Returned::NotOurs);
    }
    let tuple = FlowTuple::new(quoted.dst_be, quoted.src_be, remote_port_be, nat_port_be, quoted.protocol);
    // An error does not keep its flow alive: no refresh, no state change.
    let Some((_, entry)) = conntrack::ct_lookup(cfg, Half::Reply, &tuple, conntrack::now_ns()) else {
        // An echo identifier in the NAT range may be the gateway pod's own
        // ping (as for echo replies, `rev_nat`): its stack's business.
        return if quoted.protocol == IPPROTO_ICMP {
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
    rewrite_quote(ctx, &quoted, entry.client_ip_be, nat_port_be, entry.client_port_be, port_off)?;
    // The error itself now goes to the client: a router hop.
    nat_v4_rewrite_headers(ctx, IP_OFF, outer, End::Destination, entry.client_ip_be, 0, 0)?;
    nat_v4_to_client(ctx, cfg, &entry, 1, bytes as u64)?;
    count(Counter::IcmpErrorToClient);
    Ok(Returned::ToClient)
}

/// The quoted header as the client sent it: its source address (with the
/// quoted header's own checksum) and source port or echo identifier, each
/// change also applied to the ICMP checksum that covers them.
#[inline(always)]
fn rewrite_quote(
    ctx: &TcContext,
    quoted: &Ipv4Header,
    client_ip_be: u32,
    nat_port_be: u16,
    client_port_be: u16,
    port_off: usize,
) -> Result<(), Counter> {
    let failed = |_| Counter::DropRewriteFailed;
    let icmp_csum = L4_OFF + ICMP_CSUM_OFF;
    let old_quoted_csum: u16 = ctx.load(QUOTED_IP_OFF + IP_CSUM_OFF).map_err(failed)?;
    ctx.l3_csum_replace(QUOTED_IP_OFF + IP_CSUM_OFF, quoted.src_be as u64, client_ip_be as u64, 4)
        .map_err(failed)?;
    let new_quoted_csum: u16 = ctx.load(QUOTED_IP_OFF + IP_CSUM_OFF).map_err(failed)?;
    ctx.l4_csum_replace(icmp_csum, quoted.src_be as u64, client_ip_be as u64, 4).map_err(failed)?;
    ctx.l4_csum_replace(icmp_csum, old_quoted_csum as u64, new_quoted_csum as u64, 2).map_err(failed)?;
    ctx.store(QUOTED_IP_OFF + IP_SRC_OFF, &client_ip_be, 0).map_err(failed)?;
    if nat_port_be != client_port_be {
        ctx.l4_csum_replace(icmp_csum, nat_port_be as u64, client_port_be as u64, 2).map_err(failed)?;
        ctx.store(QUOTED_L4_OFF + port_off, &client_port_be, 0).map_err(failed)?;
    }
    Ok(())
}
