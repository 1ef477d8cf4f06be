//! Remote -> client for IPv6: a reply to the gateway's IPv6 address on a
//! NAT port is mapped back to its client's IPv6 address and port, then
//! tunnelled to the client's worker, in the tunnel the client came in
//! (over IPv4, or over IPv6 in an IPv6-only cluster: `FLOW_OUTER_IPV6`).
//!
//! ```text
//! in:  [eth, 0x86DD][IPv6 remote → gateway][L4, NAT port]
//! out: [eth][outer IPv4 or IPv6: gateway → worker | UDP | VXLAN | eth, 0x86DD][IPv6 remote → pod, hop limit - 1][L4]
//! ```
//!
//! ICMPv6 errors about a client's flow go to `icmp_error6`, in a program
//! of its own (the main classifier picks it). A reply too big for the
//! tunnel is answered to its remote with Packet Too Big (`too_big6`). A
//! fragment (its fragment header first) goes to `fragments6`.
use aya_ebpf::programs::TcContext;
use egress_common::{
    config::GatewayConfig,
    conntrack::{FlowTuple6, NatEntry6},
    counters::Counter,
    ip::{
        is_ipv6_extension_header, IPPROTO_ICMPV6, IPV6_EXT_DESTINATION_OPTIONS, IPV6_EXT_FRAGMENT,
        IPV6_EXT_HOP_BY_HOP, IPV6_EXT_ROUTING, IPV6_FRAGMENT_HLEN, IPV6_FRAGMENT_OFFSET_MASK,
    },
    maps::{
        IPV6_REPLY_FRAGMENT_PROGRAM_SLOT, IPV6_TOO_BIG_CLIENT_CB, IPV6_TOO_BIG_OVERHEAD_CB,
        IPV6_TOO_BIG_PROGRAM_SLOT,
    },
};

use crate::{
    conntrack::{self, Half},
    headers::{load_l4, Ipv6Header, L4Ports, ETH_HLEN, IPPROTO_TCP, IPPROTO_UDP, IPV6_HLEN},
    maps::wire_segments,
    nat::{
        rev_nat::live_reply,
        rewrite::{nat_v6_rewrite_headers, End},
        to_client::tunnel_to_client6,
    },
    tunnel::encap::fits_tunnel_of,
    verdict::Verdict,
};

const IP_OFF: usize = ETH_HLEN;
const L4_OFF: usize = ETH_HLEN + IPV6_HLEN;

#[inline(always)]
pub fn from_remote(ctx: &TcContext, cfg: &GatewayConfig) -> Verdict {
    let Some(ip) = Ipv6Header::load_whole(ctx, IP_OFF) else { return Verdict::NOT_OURS };
    // A fragment header first: perhaps a reply's fragment (`fragments6`),
    // unless a first fragment has more extension headers before its
    // transport header (looked through below, as any packet's).
    if ip.next_header == IPV6_EXT_FRAGMENT && translatable_fragment(ctx) {
        return Verdict::ToIpv6Program { slot: IPV6_REPLY_FRAGMENT_PROGRAM_SLOT };
    }
    if is_ipv6_extension_header(ip.next_header) {
        return behind_extension_headers(ctx, cfg, ip.next_header);
    }
    let Some(ports) = reply_ports(ctx, cfg, &ip) else { return Verdict::NOT_OURS };
    let tuple = FlowTuple6::new(ip.src, ip.dst, ports.src_port_be, ports.dst_port_be, ip.next_header);
    let now = conntrack::now_ns();
    let Some((binding, entry)) = conntrack::ct_lookup::<NatEntry6>(cfg, Half::Reply, &tuple, now) else {
        // Echo replies may be the gateway pod's own pings; anything else on
        // a NAT port is unsolicited and must not reach the pod or a worker.
        return if ip.next_header == IPPROTO_ICMPV6 {
            Verdict::NOT_OURS
        } else {
            Verdict::Drop(Counter::DropNoMapping)
        };
    };
    // A reply whose hop limit ends here goes no further (first, as a
    // router checks it).
    if ip.hop_limit <= 1 {
        return Verdict::Drop(Counter::DropTtlExceeded);
    }
    // IPv6 routers never fragment: what the tunnel cannot carry whole is
    // answered with Packet Too Big, in a program of its own (the answer
    // does not fit this one's stack), which the client id and the
    // tunnel's overhead are handed to.
    if !fits_tunnel_of(ctx, cfg, entry.tunnel_overhead()) {
        // SAFETY: the context's socket buffer, valid for the program's run.
        unsafe {
            (*ctx.skb.skb).cb[IPV6_TOO_BIG_CLIENT_CB] = entry.client_id;
            (*ctx.skb.skb).cb[IPV6_TOO_BIG_OVERHEAD_CB] = entry.tunnel_overhead() as u32;
        }
        return Verdict::ToIpv6Program { slot: IPV6_TOO_BIG_PROGRAM_SLOT };
    }
    let sent = live_reply(cfg, &tuple, ip.next_header, ports.flags_or_type, &binding, &entry, now)
        .and_then(|()| to_client(ctx, cfg, &ip, &ports, &entry));
    match sent {
        Ok(()) => Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::ForwardedToClient },
        Err(reason) => Verdict::Drop(reason),
    }
}

/// The ports of a packet that may be a reply of a client's flow, or None
/// when it is not one (the pod's own business): its transport header right
/// after the fixed one, to a NAT port.
#[inline(always)]
fn reply_ports(ctx: &TcContext, cfg: &GatewayConfig, ip: &Ipv6Header) -> Option<L4Ports> {
    if !matches!(ip.next_header, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6) {
        return None;
    }
    // ICMPv6 other than echo (errors above all) has no ports: None here.
    let ports = load_l4(ctx, L4_OFF, ip.next_header).ok()??;
    cfg.is_nat_port(u16::from_be(ports.dst_port_be)).then_some(ports)
}

/// Whether the fragment header right after the fixed one begins what
/// `egress_frag6_in` translates: a later fragment (its datagram's first
/// decides), or a first one whose transport header comes next.
#[inline(always)]
fn translatable_fragment(ctx: &TcContext) -> bool {
    let Ok(header) = ctx.load::<[u8; 4]>(L4_OFF) else { return false };
    let later = u16::from_be_bytes([header[2], header[3]]) & IPV6_FRAGMENT_OFFSET_MASK != 0;
    later || matches!(header[0], IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6)
}

/// Extension headers a remote's packet may carry before its transport
/// header, looked through (a longer chain is dropped: its transport
/// header might be a NAT port's).
const MAX_EXTENSION_HEADERS: usize = 4;

/// A packet with extension headers before its fragment header or its
/// transport header is not translated. To a NAT port, it is dropped: only a client's flow uses
/// those, and the pod's stack would answer it with a reset or a port
/// unreachable that ends the client's flow (IPv4's options, likewise).
/// So is one whose transport header cannot be found (more headers than
/// are looked through, or one not known here, AH or ESP): it might be for
/// a NAT port. ICMPv6, other ports, and a later fragment (no ports to
/// tell) are the pod's.
#[inline(always)]
fn behind_extension_headers(ctx: &TcContext, cfg: &GatewayConfig, first: u8) -> Verdict {
    let mut next = first;
    let mut off = L4_OFF;
    for _ in 0..MAX_EXTENSION_HEADERS {
        match next {
            IPV6_EXT_HOP_BY_HOP | IPV6_EXT_ROUTING | IPV6_EXT_DESTINATION_OPTIONS => {
                // Next header, then the length in 8-byte units past the first 8.
                let Ok(header) = ctx.load::<[u8; 2]>(off) else { return Verdict::NOT_OURS };
                next = header[0];
                off += (header[1] as usize + 1) * 8;
            }
            IPV6_EXT_FRAGMENT => {
                let Ok(header) = ctx.load::<[u8; 4]>(off) else { return Verdict::NOT_OURS };
                if u16::from_be_bytes([header[2], header[3]]) & IPV6_FRAGMENT_OFFSET_MASK != 0 {
                    return Verdict::NOT_OURS;
                }
                next = header[0];
                off += IPV6_FRAGMENT_HLEN;
            }
            IPPROTO_TCP | IPPROTO_UDP => {
                let Ok(dst_port_be) = ctx.load::<u16>(off + 2) else { return Verdict::NOT_OURS };
                return if cfg.is_nat_port(u16::from_be(dst_port_be)) {
                    Verdict::Drop(Counter::DropIpv6ExtHeader)
                } else {
                    Verdict::NOT_OURS
                };
            }
            IPPROTO_ICMPV6 => return Verdict::NOT_OURS,
            _ => return Verdict::Drop(Counter::DropIpv6ExtHeader),
        }
    }
    Verdict::Drop(Counter::DropIpv6ExtHeader)
}

/// Translates the reply of `entry`'s flow in place and tunnels it to the
/// client's worker.
#[inline(always)]
fn to_client(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    ip: &Ipv6Header,
    ports: &L4Ports,
    entry: &NatEntry6,
) -> Result<(), Counter> {
    nat_v6_rewrite_headers(
        ctx,
        IP_OFF,
        ip,
        End::Destination,
        &entry.client_ip,
        ports.dst_port_be,
        entry.client_port_be,
    )?;
    let bytes = (ctx.len() - ETH_HLEN as u32) as u64;
    let segments = wire_segments(ctx);
    tunnel_to_client6(ctx, cfg, entry, segments, bytes)
}
