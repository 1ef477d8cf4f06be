//! A client's ICMPv6 error about a reply of its flow, to the remote: the
//! pod's stack answers a UDP reply to a closed socket with port
//! unreachable, and the remote should learn it as it would through Linux's
//! NAT (RFC 5508's rules for a NAT, RFC 4443's errors). The quote holds the
//! reply as the pod got it, to its own address and port: both become the
//! gateway's IPv6 address and the flow's NAT port, and the error leaves
//! from the gateway's address like the flow's packets.
//!
//! ```text
//! in:  [tunnel][IPv6 pod → remote][ICMPv6 error][quote: IPv6 remote → pod][L4, pod's port]...
//! out: [eth][IPv6 gateway → remote, hop limit - 1][ICMPv6 error][quote: IPv6 remote → gateway][L4, NAT port]...
//! ```
//!
//! A tenant must not make the gateway send errors about what is not its
//! own: the quote must be a packet the remote sent to this pod's own
//! address (the error's own source, checked against the client's listed
//! address already), on a flow of this client's that the gateway knows.
//! Anything else is `drop_no_mapping` (`drop_malformed` if the error is
//! too short to hold a quote). The error does not refresh its flow. A
//! client's Packet Too Big is never translated (`snat6`).
use aya_ebpf::programs::TcContext;
use egress_common::{
    config::GatewayConfig,
    conntrack::{FlowTuple6, NatEntry6},
    counters::Counter,
};

use crate::{
    conntrack::{self, Half},
    headers::{Ipv6Header, ICMP_HLEN, IPPROTO_TCP, IPPROTO_UDP, IPV6_DST_OFF, IPV6_HLEN},
    nat::{
        icmp_error6::{quoted_l4, rewrite_quote, QuoteRewrite},
        rewrite::{nat_v6_rewrite_headers, End},
    },
};

/// Translates client `client_id`'s error `ip` (its ICMPv6 type one that
/// `icmp_error6::is_translated_error` names) in place, still in its
/// tunnel, whose inner packet is at `inner_ip_off`: the caller strips it.
#[inline(always)]
pub fn to_remote(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    ip: &Ipv6Header,
    client_id: u32,
    inner_ip_off: usize,
) -> Result<(), Counter> {
    let icmp_off = inner_ip_off + IPV6_HLEN;
    let quoted_ip_off = icmp_off + ICMP_HLEN;
    // The quote's header and ports within the error itself, not only
    // within the frame (which may carry more after it).
    if (ip.payload_len as usize) < ICMP_HLEN + IPV6_HLEN + 4 {
        return Err(Counter::DropMalformed);
    }
    let quote = Ipv6Header::load(ctx, quoted_ip_off).map_err(|_| Counter::DropMalformed)?;
    // A reply of a TCP or UDP flow (perhaps its first fragment: time
    // exceeded in reassembly quotes one), from the error's own destination
    // to the error's own source (the pod's listed address).
    let l4 = quoted_l4(ctx, quoted_ip_off, quote.next_header).ok_or(Counter::DropNoMapping)?;
    if !quote.is_v6()
        || !matches!(l4.protocol, IPPROTO_TCP | IPPROTO_UDP)
        || quote.src != ip.dst
        || quote.dst != ip.src
    {
        return Err(Counter::DropNoMapping);
    }
    // The ports within the error itself.
    if l4.off + 4 > icmp_off + ip.payload_len as usize {
        return Err(Counter::DropMalformed);
    }
    let ports: [u8; 4] = ctx.load(l4.off).map_err(|_| Counter::DropMalformed)?;
    let remote_port_be = u16::from_ne_bytes([ports[0], ports[1]]);
    let client_port_be = u16::from_ne_bytes([ports[2], ports[3]]);
    let tuple = FlowTuple6::new(quote.dst, quote.src, client_port_be, remote_port_be, l4.protocol);
    let (_, entry) = conntrack::ct_lookup::<NatEntry6>(cfg, Half::Original, &tuple, conntrack::now_ns())
        .ok_or(Counter::DropNoMapping)?;
    if entry.client_id != client_id {
        return Err(Counter::DropNoMapping);
    }
    rewrite_quote(
        ctx,
        &QuoteRewrite {
            icmp_off,
            error_end: icmp_off + ip.payload_len as usize,
            quoted_l4: &l4,
            address_off: quoted_ip_off + IPV6_DST_OFF,
            old_address: &quote.dst,
            new_address: &cfg.gateway_ip6,
            port_off: l4.off + 2,
            old_port_be: client_port_be,
            new_port_be: entry.nat_port_be,
        },
    )?;
    // The error itself leaves from the gateway, one hop on (no port: the
    // port arguments equal).
    nat_v6_rewrite_headers(ctx, inner_ip_off, ip, End::Source, &cfg.gateway_ip6, 0, 0)
}
