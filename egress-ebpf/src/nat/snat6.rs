//! Client -> remote for IPv6: a labeled pod's IPv6 packet, in its IPv4
//! tunnel (a dual-stack cluster) or its IPv6 one (an IPv6-only cluster,
//! `tunnel::outer`), is checked, bound to a NAT port with the same
//! conntrack as IPv4 (`conntrack`, over `NatEntry6`), rewritten to the
//! gateway's IPv6 address and sent out as IPv6.
//!
//! ```text
//! in:  [eth][outer IPv4 or IPv6: worker → gateway | UDP | VXLAN | eth][IPv6 pod → remote][L4]
//! out: [eth, 0x86DD][IPv6 gateway → remote, hop limit - 1][L4, NAT port]
//! ```
//!
//! A packet whose hop limit ends here is answered with time exceeded
//! (`time_exceeded6`), in a program of its own. A client's ICMPv6 error about a reply of its flow
//! goes to the remote, translated (`client_error6`); error types RFC 4443
//! does not define are dropped (`drop_ipv6_not_translated`). A fragment
//! (its fragment header right after the fixed one) is checked here like
//! any packet and translated in `egress_frag6_out` (`fragments6`).
use aya_ebpf::{helpers::bpf_skb_load_bytes, maps::lpm_trie::Key, programs::TcContext, EbpfContext};
use egress_common::{
    config::GatewayConfig,
    conntrack::{FlowState, FlowTuple6, NatEntry6},
    counters::Counter,
    gro::UploadRoute,
    ip::{
        is_icmpv6_error, is_ipv6_extension_header, is_martian_destination, is_martian_destination_v6,
        nat64_embedded_ipv4, ICMPV6_PACKET_TOO_BIG, IPV6_EXT_FRAGMENT,
    },
};

use crate::{
    conntrack,
    headers::{
        load_l4, Ipv6Header, L4Ports, ETH_HLEN, ICMPV6_ECHO_REQUEST, IPPROTO_ICMPV6, IPPROTO_TCP,
        IPPROTO_UDP, IPV6_HLEN, TCP_RST, UDP_CSUM_OFF,
    },
    maps::{account, count, wire_segments, Direction, CLIENTS6, CT6_TEMPLATE, EXCLUDED_DSTS, EXCLUDED_DSTS6},
    nat::{
        client_error6,
        icmp_error6::is_translated_error,
        rewrite::{nat_v6_rewrite_headers, End},
        snat::{gro_route, live_original},
        time_exceeded6,
    },
    tunnel::{
        decap::merge_ecn6,
        outer::{Outer, Sender},
    },
    verdict::Verdict,
};

#[inline(always)]
pub fn from_client<O: Outer>(ctx: &TcContext, cfg: &GatewayConfig) -> Verdict {
    match snat_v6_process::<O>(ctx, cfg) {
        Ok(verdict) => verdict,
        Err(reason) => Verdict::Drop(reason),
    }
}

/// Translates the packet in place, turns it into the gateway's answer to
/// the client, or hands it on to the program that translates it.
#[inline(always)]
fn snat_v6_process<O: Outer>(ctx: &TcContext, cfg: &GatewayConfig) -> Result<Verdict, Counter> {
    let sender = O::sender(ctx, cfg)?;
    let ip = inner_packet::<O>(ctx)?;
    if !cfg.has_ipv6() {
        return Err(Counter::DropIpv6Disabled);
    }
    // The pod may only send as itself: the IPv6 address listed for the
    // client whose outer header carries it.
    match unsafe { CLIENTS6.get(&ip.src) } {
        Some(client) if client.client_id == sender.client_id => {}
        _ => return Err(Counter::DropSpoofedInnerSource),
    }
    let nat64_ipv4 = nat64_embedded_ipv4(&ip.dst);
    if is_martian_destination_v6(&ip.dst, &cfg.gateway_ip6)
        || nat64_ipv4.is_some_and(|ipv4_be| is_martian_destination(ipv4_be, cfg.gateway_ip_be))
    {
        return Err(Counter::DropMartianDestination);
    }
    // Answered in a program of its own (`expired_from_client`).
    if ip.hop_limit <= 1 {
        return Ok(Verdict::ToIpv6Program { slot: O::TIME_EXCEEDED_SLOT });
    }
    if EXCLUDED_DSTS6.get(Key::new(128, ip.dst)).is_some()
        || nat64_ipv4.is_some_and(|ipv4_be| EXCLUDED_DSTS.get(Key::new(32, ipv4_be)).is_some())
    {
        return Err(Counter::DropExcludedDestination);
    }
    // Before any state is made for it: a packet RFC 6040 drops makes none.
    merge_ecn6(ctx, sender.outer_tos, &ip, O::INNER_IP_OFF)?;
    if ip.next_header == IPV6_EXT_FRAGMENT {
        return Ok(Verdict::ToIpv6Program { slot: O::FRAGMENT_SLOT });
    }
    let inner_l4_off = O::INNER_IP_OFF + IPV6_HLEN;
    let ports = match load_l4(ctx, inner_l4_off, ip.next_header).map_err(|_| Counter::DropMalformed)? {
        Some(ports) => ports,
        None if ip.next_header == IPPROTO_ICMPV6 => return error_to_remote::<O>(ctx),
        None => return Err(Counter::DropUnsupportedProtocol),
    };
    // Clients start echo exchanges; an echo reply from a client answers an
    // inbound ping, which never reaches clients through us.
    if ip.next_header == IPPROTO_ICMPV6 && ports.flags_or_type != ICMPV6_ECHO_REQUEST {
        return Err(Counter::DropUnsupportedProtocol);
    }
    // IPv6 makes the UDP checksum mandatory (RFC 8200 8.1): a zero one
    // would be passed through unchanged and dropped by the remote.
    if ip.next_header == IPPROTO_UDP {
        let checksum: u16 = ctx.load(inner_l4_off + UDP_CSUM_OFF).map_err(|_| Counter::DropMalformed)?;
        if checksum == 0 {
            return Err(Counter::DropMalformed);
        }
    }

    let now = conntrack::now_ns();
    // A new flow's first packet always goes straight out (its route is
    // still undecided), as for IPv4.
    let (nat_port_be, route) = match live_nat_port(ctx, cfg, &ip, &ports, now) {
        Some(live) => live,
        None => (
            snat_v6_new_mapping::<O>(ctx, cfg, &sender, &ip, ip.next_header, &ports, now)?,
            UploadRoute::Direct,
        ),
    };
    nat_v6_rewrite_headers(
        ctx,
        O::INNER_IP_OFF,
        &ip,
        End::Source,
        &cfg.gateway_ip6,
        ports.src_port_be,
        nat_port_be,
    )?;
    // Before the tunnel goes: bpf_skb_adjust_room zeroes a GSO packet's
    // gso_segs ("to be recomputed"), which would count it as one packet.
    let segments = wire_segments(ctx);
    O::strip(ctx)?;
    account(sender.client_id, Direction::ToRemote, segments, (ctx.len() - ETH_HLEN as u32) as u64);
    Ok(match route {
        UploadRoute::GroStage => Verdict::ToGroStage { ifindex: cfg.gro_ifindex },
        _ => Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::ForwardedToRemote },
    })
}

/// The inner IPv6 packet, checked as the translation needs it: whole, its
/// transport header (or a fragment header) right after the fixed header.
#[inline(always)]
fn inner_packet<O: Outer>(ctx: &TcContext) -> Result<Ipv6Header, Counter> {
    let ip = Ipv6Header::load_whole(ctx, O::INNER_IP_OFF).ok_or(Counter::DropMalformed)?;
    match ip.next_header {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6 | IPV6_EXT_FRAGMENT => Ok(ip),
        header if is_ipv6_extension_header(header) => Err(Counter::DropIpv6ExtHeader),
        _ => Err(Counter::DropUnsupportedProtocol),
    }
}

/// A client's ICMPv6 message other than an echo: an error about a reply
/// of its flow goes on to `egress_client_error6` (its translation does not
/// fit this program), which trusts the checks made here; error types RFC
/// 4443 does not define, and Packet Too Big, are not translated; informational messages other
/// than echo (neighbour discovery, router solicitation) are the link's
/// business, never a remote's.
#[inline(always)]
fn error_to_remote<O: Outer>(ctx: &TcContext) -> Result<Verdict, Counter> {
    let icmp_type: u8 = ctx.load(O::INNER_IP_OFF + IPV6_HLEN).map_err(|_| Counter::DropMalformed)?;
    if !is_icmpv6_error(icmp_type) {
        return Err(Counter::DropUnsupportedProtocol);
    }
    // A pod is its replies' final destination and never has to send
    // Packet Too Big about them; one it sends would lower the path MTU the
    // remote keeps for the gateway's address, every tenant's.
    if !is_translated_error(icmp_type) || icmp_type == ICMPV6_PACKET_TOO_BIG {
        return Err(Counter::DropIpv6NotTranslated);
    }
    Ok(Verdict::ToIpv6Program { slot: O::CLIENT_ERROR_SLOT })
}

/// `egress_client_error6`: the client's ICMPv6 error, in its tunnel, that
/// `egress_gateway6` checked as it checks every packet of the client's
/// (its source listed, its destination neither martian nor excluded, its
/// hop limit above 1): translated and sent to the remote.
#[inline(always)]
pub fn error_from_client<O: Outer>(ctx: &TcContext, cfg: &GatewayConfig) -> Verdict {
    let sent = O::sender(ctx, cfg).and_then(|sender| {
        let ip = Ipv6Header::load_whole(ctx, O::INNER_IP_OFF).ok_or(Counter::DropMalformed)?;
        // Checked before the tail call; again, as the hop is taken here.
        if ip.hop_limit <= 1 {
            return Err(Counter::DropTtlExceeded);
        }
        client_error6::to_remote(ctx, cfg, &ip, sender.client_id, O::INNER_IP_OFF)?;
        O::strip(ctx)?;
        account(sender.client_id, Direction::ToRemote, 1, (ctx.len() - ETH_HLEN as u32) as u64);
        Ok(())
    });
    match sent {
        Ok(()) => {
            count(Counter::IcmpErrorToRemote);
            Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::ForwardedToRemote }
        }
        Err(reason) => Verdict::Drop(reason),
    }
}

/// `egress_ttl6` (`egress_o6_ttl`): the client's packet whose hop limit
/// ends here, which `egress_gateway6` (`egress_o6_gw`) checked as it
/// checks every packet of the client's: answered with time exceeded, in
/// its tunnel.
#[inline(always)]
pub fn expired_from_client<O: Outer>(ctx: &TcContext, cfg: &GatewayConfig) -> Verdict {
    let answered = O::sender(ctx, cfg).and_then(|sender| {
        let ip = Ipv6Header::load_whole(ctx, O::INNER_IP_OFF).ok_or(Counter::DropMalformed)?;
        // Checked before the tail call; again, as it decides.
        if ip.hop_limit > 1 {
            return Err(Counter::DropMalformed);
        }
        time_exceeded6::answer::<O>(ctx, cfg, &sender, &ip)
    });
    match answered {
        Ok(()) => Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::IcmpErrorToClient },
        Err(reason) => Verdict::Drop(reason),
    }
}

/// The NAT port of the flow's live binding, if it has one
/// (`live_original`), and where this packet goes: a TCP flow's full-sized
/// segments through the GRO stage, when there is one (`egress_common::gro`).
#[inline(always)]
fn live_nat_port(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    ip: &Ipv6Header,
    ports: &L4Ports,
    now: u64,
) -> Option<(u16, UploadRoute)> {
    let tuple = FlowTuple6::new(ip.src, ip.dst, ports.src_port_be, ports.dst_port_be, ip.next_header);
    let (binding, entry) = live_original::<NatEntry6>(cfg, &tuple, ip.next_header, ports.flags_or_type, now)?;
    let route = match cfg.gro_ifindex != 0 && ip.next_header == IPPROTO_TCP {
        true => gro_route(ctx, &binding, &entry, ip.payload_len.saturating_add(IPV6_HLEN as u16)),
        false => UploadRoute::Direct,
    };
    Some((entry.nat_port_be, route))
}

/// Copies the 6-byte MAC at `off` into `mac` (aya's `load_bytes` clamps
/// the length to the packet, which the verifier refuses as a possibly
/// empty read).
#[inline(always)]
fn load_mac(ctx: &TcContext, off: usize, mac: &mut [u8; 6]) -> Result<(), Counter> {
    // SAFETY: the helper writes exactly 6 bytes into `mac`.
    let loaded = unsafe { bpf_skb_load_bytes(ctx.as_ptr(), off as u32, mac.as_mut_ptr() as *mut _, 6) };
    if loaded == 0 {
        Ok(())
    } else {
        Err(Counter::DropMalformed)
    }
}

/// A binding for a flow the gateway does not know yet; returns its NAT
/// port. As for IPv4: a TCP RST makes nothing; any other first packet an
/// unreplied binding. `protocol`: the transport header's (after a
/// fragment header, not `ip.next_header`).
#[inline(always)]
pub fn snat_v6_new_mapping<O: Outer>(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    sender: &Sender,
    ip: &Ipv6Header,
    protocol: u8,
    ports: &L4Ports,
    now: u64,
) -> Result<u16, Counter> {
    if protocol == IPPROTO_TCP && ports.flags_or_type & TCP_RST != 0 {
        return Err(Counter::DropRstWithoutFlow);
    }
    // Filled in this CPU's template slot, off the stack; the MACs are
    // loaded into it straight from the packet (as bytes through registers
    // they took a stack slot each).
    let entry = CT6_TEMPLATE.get_ptr_mut(0).ok_or(Counter::DropConntrackFull)?;
    // SAFETY: a per-CPU value nothing else on this CPU uses meanwhile.
    let entry = unsafe { &mut *entry };
    load_mac(ctx, O::INNER_ETH_OFF, &mut entry.tunnel_gateway_mac)?;
    load_mac(ctx, O::INNER_ETH_OFF + 6, &mut entry.client_mac)?;
    entry.client_ip = ip.src;
    entry.remote_ip = ip.dst;
    entry.client_outer_ip_be = sender.outer_ip_be;
    entry.client_port_be = ports.src_port_be;
    entry.remote_port_be = ports.dst_port_be;
    entry.nat_port_be = 0;
    entry.protocol = protocol;
    entry.state = if protocol == IPPROTO_TCP { FlowState::SynSent as u8 } else { FlowState::Open as u8 };
    entry.last_seen_ns = now;
    entry.client_id = sender.client_id;
    entry.upload_route = UploadRoute::Undecided as u8;
    entry.flags = O::BINDING_FLAGS;
    entry._pad0 = 0;
    entry.created_ns = 0;
    conntrack::ct_create_binding(cfg, entry, now)
}
