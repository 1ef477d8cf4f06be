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
use egress_common::{
    config::GatewayConfig,
    conntrack::{FlowTuple, PROTO_ICMP},
    counters::Counter,
};

use crate::{
    conntrack::{self, Half},
    csum,
    headers::{
        Ipv4Header, ETH_HLEN, ICMP_CSUM_OFF, ICMP_ECHO_REQUEST, ICMP_ID_OFF, IPPROTO_ICMP, IPPROTO_TCP,
        IPPROTO_UDP, IPV4_HLEN, IP_CSUM_OFF, IP_DST_OFF, IP_SRC_OFF, TUNNEL_OVERHEAD,
    },
    maps::{account, count, Direction},
    tunnel::encap::push_tunnel,
    verdict::Verdict,
};

pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_TIME_EXCEEDED: u8 = 11;

const IP_OFF: usize = ETH_HLEN;
const ICMP_OFF: usize = ETH_HLEN + IPV4_HLEN;
const ICMP_HLEN: usize = 8;
/// The quoted IPv4 header (ours never carry options) and what follows it.
const QUOTED_IP_OFF: usize = ICMP_OFF + ICMP_HLEN;
const QUOTED_L4_OFF: usize = QUOTED_IP_OFF + IPV4_HLEN;

/// Whether an ICMP type is an error this module translates.
#[inline(always)]
pub fn is_translated_error(icmp_type: u8) -> bool {
    icmp_type == ICMP_DEST_UNREACHABLE || icmp_type == ICMP_TIME_EXCEEDED
}

/// An ICMP error addressed to the gateway (`outer` has no options; the
/// caller checked). Ours when it quotes a packet we sent from a NAT port.
#[inline(always)]
pub fn from_remote(ctx: &TcContext, cfg: &GatewayConfig, outer: &Ipv4Header) -> Verdict {
    let Ok(quoted) = Ipv4Header::load(ctx, QUOTED_IP_OFF) else {
        return Verdict::NotOurs;
    };
    if quoted.src_be != cfg.gateway_ip_be || quoted.version_ihl != 0x45 {
        return Verdict::NotOurs;
    }
    // The quoted flow, as the gateway sent it: NAT port (or echo id) first.
    let Ok(l4) = ctx.load::<[u8; 8]>(QUOTED_L4_OFF) else {
        return Verdict::NotOurs;
    };
    let (nat_port_be, remote_port_be, port_off) = match quoted.protocol {
        IPPROTO_TCP | IPPROTO_UDP => {
            (u16::from_ne_bytes([l4[0], l4[1]]), u16::from_ne_bytes([l4[2], l4[3]]), 0)
        }
        IPPROTO_ICMP if l4[0] == ICMP_ECHO_REQUEST => (u16::from_ne_bytes([l4[4], l4[5]]), 0, ICMP_ID_OFF),
        _ => return Verdict::NotOurs,
    };
    if !cfg.is_nat_port(u16::from_be(nat_port_be)) {
        return Verdict::NotOurs;
    }
    let tuple = FlowTuple::new(quoted.dst_be, quoted.src_be, remote_port_be, nat_port_be, quoted.protocol);
    // An error does not keep its flow alive: no refresh, no state change.
    let Some(ptr) = conntrack::lookup(cfg, Half::Reply, &tuple, conntrack::now_ns()) else {
        // An echo identifier in the NAT range may be the gateway pod's own
        // ping (as for echo replies, `rev_nat`): its stack's business.
        return if quoted.protocol == IPPROTO_ICMP {
            Verdict::NotOurs
        } else {
            Verdict::Drop(Counter::DropNoMapping)
        };
    };
    let entry = unsafe { *ptr };
    if outer.ttl <= 1 {
        return Verdict::Drop(Counter::DropTtlExceeded);
    }
    // Routers quote at most 576 bytes in all (RFC 1812), which always fits;
    // a longer quote would not, once encapsulated.
    if cfg.mtu != 0 && ctx.len() - ETH_HLEN as u32 + TUNNEL_OVERHEAD as u32 > cfg.mtu {
        return Verdict::Drop(Counter::DropTooBigForTunnel);
    }
    if rewrite(ctx, outer, &quoted, entry.client_ip_be, nat_port_be, entry.client_port_be, port_off).is_err()
    {
        return Verdict::Drop(Counter::DropRewriteFailed);
    }
    let bytes = (ctx.len() - ETH_HLEN as u32) as u64;
    match push_tunnel(ctx, cfg, &entry) {
        Ok(()) => {
            account(entry.client_id, Direction::ToClient, 1, bytes);
            count(Counter::IcmpErrorToClient);
            Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::ForwardedToClient }
        }
        Err(reason) => Verdict::Drop(reason),
    }
}

#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    outer: &Ipv4Header,
    quoted: &Ipv4Header,
    client_ip_be: u32,
    nat_port_be: u16,
    client_port_be: u16,
    port_off: usize,
) -> Result<(), ()> {
    let icmp_csum = ICMP_OFF + ICMP_CSUM_OFF;
    // The quoted header: its source, then its own checksum, each change
    // also applied to the ICMP checksum that covers them.
    let old_quoted_csum: u16 = ctx.load(QUOTED_IP_OFF + IP_CSUM_OFF).map_err(|_| ())?;
    ctx.l3_csum_replace(QUOTED_IP_OFF + IP_CSUM_OFF, quoted.src_be as u64, client_ip_be as u64, 4)
        .map_err(|_| ())?;
    let new_quoted_csum: u16 = ctx.load(QUOTED_IP_OFF + IP_CSUM_OFF).map_err(|_| ())?;
    ctx.l4_csum_replace(icmp_csum, quoted.src_be as u64, client_ip_be as u64, 4).map_err(|_| ())?;
    ctx.l4_csum_replace(icmp_csum, old_quoted_csum as u64, new_quoted_csum as u64, 2).map_err(|_| ())?;
    ctx.store(QUOTED_IP_OFF + IP_SRC_OFF, &client_ip_be, 0).map_err(|_| ())?;
    // The quoted source port (TCP, UDP) or echo identifier.
    if nat_port_be != client_port_be {
        ctx.l4_csum_replace(icmp_csum, nat_port_be as u64, client_port_be as u64, 2).map_err(|_| ())?;
        ctx.store(QUOTED_L4_OFF + port_off, &client_port_be, 0).map_err(|_| ())?;
    }
    // The error itself now goes to the client: a router hop.
    csum::rewrite_ipv4_addr(ctx, IP_OFF, IP_DST_OFF, ICMP_OFF, PROTO_ICMP, outer.dst_be, client_ip_be)?;
    csum::decrement_ttl(ctx, IP_OFF, outer.ttl, PROTO_ICMP)
}
