//! Client -> remote for IPv6: a labeled pod's IPv6 packet, in its IPv4
//! tunnel (a dual-stack cluster), checked as its translation will need it:
//! from the client's own IPv6 address, to a destination that may be NATed,
//! a transport header that can be bound.
//!
//! The translation itself (a binding in the IPv6 conntrack, the rewrite to
//! the gateway's IPv6 address) is not built yet (issue 14): what passes
//! every check is dropped as `drop_ipv6_not_translated`. The conntrack's
//! generic code, inlined for IPv6, needs more stack than a program has
//! (measured: 824 bytes of 512 for the whole path, 400 for `ct_lookup`
//! alone in a frame of its own), so it must first keep its copies off the
//! stack.
use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use egress_common::{
    config::GatewayConfig,
    counters::Counter,
    ip::{
        is_icmpv6_error, is_martian_destination_v6, IPV6_EXT_DESTINATION_OPTIONS, IPV6_EXT_FRAGMENT,
        IPV6_EXT_HOP_BY_HOP, IPV6_EXT_ROUTING,
    },
};

use crate::{
    headers::{
        load_l4, Ipv4Header, Ipv6Header, ETH_HLEN, ICMPV6_ECHO_REQUEST, IPPROTO_ICMPV6, IPPROTO_TCP,
        IPPROTO_UDP, IPV6_HLEN, UDP_CSUM_OFF,
    },
    maps::{CLIENTS, CLIENTS6, EXCLUDED_DSTS6},
    tunnel::decap::INNER_IP_OFF,
    verdict::Verdict,
};

const INNER_L4_OFF: usize = INNER_IP_OFF + IPV6_HLEN;

#[inline(always)]
pub fn from_client(ctx: &TcContext, cfg: &GatewayConfig) -> Verdict {
    match check(ctx, cfg) {
        Ok(()) => Verdict::Drop(Counter::DropIpv6NotTranslated),
        Err(reason) => Verdict::Drop(reason),
    }
}

/// Every check of the client's packet before a binding is made, in the
/// order IPv4's `snat_v4_process` makes them.
#[inline(always)]
fn check(ctx: &TcContext, cfg: &GatewayConfig) -> Result<(), Counter> {
    let client_id = client_id(ctx)?;
    let ip = inner_packet(ctx)?;
    if !cfg.has_ipv6() {
        return Err(Counter::DropIpv6Disabled);
    }
    // The pod may only send as itself: the IPv6 address listed for the
    // client whose outer IPv4 carries it.
    match unsafe { CLIENTS6.get(&ip.src) } {
        Some(client) if client.client_id == client_id => {}
        _ => return Err(Counter::DropSpoofedInnerSource),
    }
    if is_martian_destination_v6(&ip.dst, &cfg.gateway_ip6) {
        return Err(Counter::DropMartianDestination);
    }
    // Time exceeded, the gateway's answer as a hop, is not built yet.
    if ip.hop_limit <= 1 {
        return Err(Counter::DropIpv6NotTranslated);
    }
    if EXCLUDED_DSTS6.get(Key::new(128, ip.dst)).is_some() {
        return Err(Counter::DropExcludedDestination);
    }
    let ports = match load_l4(ctx, INNER_L4_OFF, ip.next_header).map_err(|_| Counter::DropMalformed)? {
        Some(ports) => ports,
        None if ip.next_header == IPPROTO_ICMPV6 => return Err(icmpv6_refusal(ctx)),
        None => return Err(Counter::DropUnsupportedProtocol),
    };
    // Clients start echo exchanges; an echo reply from a client answers an
    // inbound ping, which never reaches clients through us.
    if ip.next_header == IPPROTO_ICMPV6 && ports.flags_or_type != ICMPV6_ECHO_REQUEST {
        return Err(Counter::DropUnsupportedProtocol);
    }
    // IPv6 makes the UDP checksum mandatory (RFC 8200 8.1): a zero one
    // would leave unchanged and be dropped by the remote.
    if ip.next_header == IPPROTO_UDP {
        let checksum: u16 = ctx.load(INNER_L4_OFF + UDP_CSUM_OFF).map_err(|_| Counter::DropMalformed)?;
        if checksum == 0 {
            return Err(Counter::DropMalformed);
        }
    }
    Ok(())
}

/// The client id of the outer source, which the main program checked is a
/// labeled pod's (read again: a tail call carries nothing over but the
/// packet).
#[inline(always)]
fn client_id(ctx: &TcContext) -> Result<u32, Counter> {
    let outer = Ipv4Header::load(ctx, ETH_HLEN).map_err(|_| Counter::DropMalformed)?;
    let client = unsafe { CLIENTS.get(&outer.src_be) }.ok_or(Counter::DropUnknownClient)?;
    Ok(client.client_id)
}

/// The inner IPv6 packet: whole, its transport header right after the
/// fixed header.
#[inline(always)]
fn inner_packet(ctx: &TcContext) -> Result<Ipv6Header, Counter> {
    let ip = Ipv6Header::load(ctx, INNER_IP_OFF).map_err(|_| Counter::DropMalformed)?;
    if !ip.is_v6() {
        return Err(Counter::DropMalformed);
    }
    // The packet must be all there (a length that lies would leave as one).
    if (INNER_IP_OFF + IPV6_HLEN) as u32 + ip.payload_len as u32 > ctx.len() {
        return Err(Counter::DropMalformed);
    }
    match ip.next_header {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6 => Ok(ip),
        IPV6_EXT_HOP_BY_HOP | IPV6_EXT_ROUTING | IPV6_EXT_FRAGMENT | IPV6_EXT_DESTINATION_OPTIONS => {
            Err(Counter::DropIpv6ExtHeader)
        }
        _ => Err(Counter::DropUnsupportedProtocol),
    }
}

/// Why a client's ICMPv6 message other than an echo is not sent: its
/// errors (about a reply it got) are not translated yet; informational
/// messages other than echo (neighbour discovery, router solicitation) are
/// the link's business, never a remote's.
#[inline(always)]
fn icmpv6_refusal(ctx: &TcContext) -> Counter {
    match ctx.load::<u8>(INNER_L4_OFF) {
        Ok(icmp_type) if is_icmpv6_error(icmp_type) => Counter::DropIpv6NotTranslated,
        Ok(_) => Counter::DropUnsupportedProtocol,
        Err(_) => Counter::DropMalformed,
    }
}
