//! ICMPv6 errors about a client's IPv6 flow, from the remote side to the
//! client (RFC 4443 errors; RFC 7915's rules for a translator's quote): a
//! router beyond the gateway sends destination unreachable, Packet Too Big,
//! time exceeded or parameter problem to the gateway's IPv6 address about
//! a packet the gateway sent from a NAT port. The client must get it as if
//! it had been addressed itself: IPv6 routers never fragment, so without
//! Packet Too Big reaching the client, path MTU discovery fails and its
//! large packets vanish (RFC 8201).
//!
//! ```text
//! in:  [eth][IPv6 router → gateway][ICMPv6 error][quote: IPv6 gateway → remote][L4, NAT port]...
//! out: [eth][tunnel to the worker][IPv6 router → pod, hop limit - 1][ICMPv6 error][quote: IPv6 pod → remote][L4, pod's port]...
//! ```
//!
//! What changes: the error's destination (a NAT hop), the quoted source
//! address and port (or echo identifier), the quoted transport checksum
//! when the quote holds it, and the ICMPv6 checksum, which covers both the
//! error's own addresses and the whole quote. The Packet Too Big MTU and
//! the parameter problem's pointer need no change: the quote keeps its
//! header's size.
use aya_ebpf::programs::TcContext;
use egress_common::{
    config::GatewayConfig,
    conntrack::{FlowTuple6, NatEntry6},
    counters::Counter,
    ip::{
        ICMPV6_DEST_UNREACHABLE, ICMPV6_ECHO_REQUEST, ICMPV6_PACKET_TOO_BIG, ICMPV6_PARAMETER_PROBLEM,
        ICMPV6_TIME_EXCEEDED, IPPROTO_ICMPV6,
    },
};

use crate::{
    conntrack::{self, Half},
    csum::address_diff6,
    headers::{
        l4_csum_off, Ipv6Header, ETH_HLEN, ICMP_CSUM_OFF, ICMP_HLEN, ICMP_ID_OFF, IPPROTO_TCP, IPPROTO_UDP,
        IPV6_HLEN, IPV6_SRC_OFF,
    },
    maps::count,
    nat::{
        rewrite::{nat_v6_rewrite_headers, End},
        to_client::tunnel_to_client,
    },
    tunnel::encap::{fits_tunnel, TunnelTarget},
    verdict::Verdict,
};

const IP_OFF: usize = ETH_HLEN;
const ICMP_OFF: usize = IP_OFF + IPV6_HLEN;
const QUOTED_IP_OFF: usize = ICMP_OFF + ICMP_HLEN;
const QUOTED_L4_OFF: usize = QUOTED_IP_OFF + IPV6_HLEN;

/// The flow an error quotes, as the gateway sent it.
struct Quote {
    ip: Ipv6Header,
    /// The NAT port (or echo identifier) it was sent from, and where in the
    /// quoted transport header that sits.
    nat_port_be: u16,
    port_off: usize,
    /// The remote's port as the reply tuple keys it (0 for echo).
    remote_port_be: u16,
}

/// Whether an ICMPv6 type is an error this module translates (RFC 4443's
/// four; other error types are the pod's).
#[inline(always)]
pub fn is_translated_error(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMPV6_DEST_UNREACHABLE | ICMPV6_PACKET_TOO_BIG | ICMPV6_TIME_EXCEEDED | ICMPV6_PARAMETER_PROBLEM
    )
}

/// An ICMPv6 error to the gateway's IPv6 address (`outer`, whole, no
/// extension headers). A client's when it quotes a packet the gateway sent
/// from a NAT port of a live binding; one about a NAT port with none is
/// dropped (it can concern no one else); anything else is the pod's.
#[inline(always)]
pub fn from_remote(ctx: &TcContext, cfg: &GatewayConfig, outer: &Ipv6Header) -> Verdict {
    let Some(quote) = load_quote(ctx, cfg) else { return Verdict::NOT_OURS };
    let tuple = FlowTuple6::new(
        quote.ip.dst,
        quote.ip.src,
        quote.remote_port_be,
        quote.nat_port_be,
        quote.ip.next_header,
    );
    // An error does not keep its flow alive: no refresh, no state change.
    let Some((_, entry)) = conntrack::ct_lookup::<NatEntry6>(cfg, Half::Reply, &tuple, conntrack::now_ns())
    else {
        // An echo identifier in the NAT range may be the gateway pod's own
        // ping: its stack's business.
        return if quote.ip.next_header == IPPROTO_ICMPV6 {
            Verdict::NOT_OURS
        } else {
            Verdict::Drop(Counter::DropNoMapping)
        };
    };
    if outer.hop_limit <= 1 {
        return Verdict::Drop(Counter::DropTtlExceeded);
    }
    // An error carries at most 1280 bytes (RFC 4443 2.4), which fits any
    // tunnel over an IPv6-capable link; a longer one may not.
    if !fits_tunnel(ctx, cfg) {
        return Verdict::Drop(Counter::DropTooBigForTunnel);
    }
    match to_client(ctx, cfg, outer, &quote, &entry) {
        Ok(()) => {
            count(Counter::IcmpErrorToClient);
            Verdict::Redirect { ifindex: cfg.ifindex, counter: Counter::ForwardedToClient }
        }
        Err(reason) => Verdict::Drop(reason),
    }
}

/// The quote of a packet the gateway sent from a NAT port: an IPv6 header
/// from the gateway's IPv6 address (no extension headers), then TCP or UDP
/// ports, or an echo request's identifier.
#[inline(always)]
fn load_quote(ctx: &TcContext, cfg: &GatewayConfig) -> Option<Quote> {
    let ip = Ipv6Header::load(ctx, QUOTED_IP_OFF).ok()?;
    if !ip.is_v6() || ip.src != cfg.gateway_ip6 {
        return None;
    }
    let l4: [u8; 8] = ctx.load(QUOTED_L4_OFF).ok()?;
    let quote = match ip.next_header {
        IPPROTO_TCP | IPPROTO_UDP => Quote {
            nat_port_be: u16::from_ne_bytes([l4[0], l4[1]]),
            port_off: 0,
            remote_port_be: u16::from_ne_bytes([l4[2], l4[3]]),
            ip,
        },
        IPPROTO_ICMPV6 if l4[0] == ICMPV6_ECHO_REQUEST => Quote {
            nat_port_be: u16::from_ne_bytes([l4[4], l4[5]]),
            port_off: ICMP_ID_OFF,
            remote_port_be: 0,
            ip,
        },
        _ => return None,
    };
    cfg.is_nat_port(u16::from_be(quote.nat_port_be)).then_some(quote)
}

/// Rewrites the quote and the error for the client of `entry` and tunnels
/// it to its worker.
#[inline(always)]
fn to_client(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    outer: &Ipv6Header,
    quote: &Quote,
    entry: &NatEntry6,
) -> Result<(), Counter> {
    rewrite_quote(
        ctx,
        &QuoteRewrite {
            icmp_off: ICMP_OFF,
            error_end: ICMP_OFF + outer.payload_len as usize,
            next_header: quote.ip.next_header,
            address_off: QUOTED_IP_OFF + IPV6_SRC_OFF,
            old_address: &cfg.gateway_ip6,
            new_address: &entry.client_ip,
            port_off: QUOTED_L4_OFF + quote.port_off,
            old_port_be: quote.nat_port_be,
            new_port_be: entry.client_port_be,
        },
    )?;
    // The error itself now goes to the client, one hop on: its destination
    // in the pseudo-header too (the port arguments equal: no port here).
    nat_v6_rewrite_headers(ctx, IP_OFF, outer, End::Destination, &entry.client_ip, 0, 0)?;
    let bytes = (ctx.len() - ETH_HLEN as u32) as u64;
    tunnel_to_client(ctx, cfg, &TunnelTarget::of6(entry), entry.client_id, 1, bytes)
}

/// What a NAT changes in an ICMPv6 error's quote: one of the quoted
/// packet's addresses and its port (or echo identifier) on the same end.
pub struct QuoteRewrite<'a> {
    /// Where the ICMPv6 message starts, and where the error ends (its own
    /// length, not the frame's, which may be padded past it).
    pub icmp_off: usize,
    pub error_end: usize,
    /// The quoted packet's transport protocol.
    pub next_header: u8,
    /// Where the quoted address sits, and what it was and becomes.
    pub address_off: usize,
    pub old_address: &'a [u8; 16],
    pub new_address: &'a [u8; 16],
    /// Where the quoted port (or identifier) sits, and what it was and
    /// becomes.
    pub port_off: usize,
    pub old_port_be: u16,
    pub new_port_be: u16,
}

/// Rewrites the quote as `change` says, in either direction: the quoted
/// transport checksum follows when the quote holds it (its pseudo-header
/// has the quoted addresses, and it covers the port), and the ICMPv6
/// checksum follows everything changed inside the message. The error's
/// own addresses are the caller's.
#[inline(always)]
pub fn rewrite_quote(ctx: &TcContext, change: &QuoteRewrite) -> Result<(), Counter> {
    let address_diff = address_diff6(change.old_address, change.new_address)?;
    let (old_port, new_port) = (change.old_port_be as u32, change.new_port_be as u32);
    let icmp_csum_off = change.icmp_off + ICMP_CSUM_OFF;
    let quoted_l4_off = change.icmp_off + ICMP_HLEN + IPV6_HLEN;
    let quoted_csum_off = quoted_l4_off + l4_csum_off(change.next_header);
    let before: u16 = ctx.load(quoted_csum_off).unwrap_or(0);
    // A zero UDP checksum means none (not in IPv6, and never ours): kept.
    let no_udp_checksum = change.next_header == IPPROTO_UDP && before == 0;
    if quoted_csum_off + 2 <= change.error_end && !no_udp_checksum {
        replace_in_sum(ctx, quoted_csum_off, 0, address_diff, 0)?;
        replace_in_sum(ctx, quoted_csum_off, old_port, new_port, 2)?;
        let after: u16 = ctx.load(quoted_csum_off).map_err(|_| Counter::DropMalformed)?;
        // The ICMPv6 checksum covers that field too.
        replace_in_sum(ctx, icmp_csum_off, before as u32, after as u32, 2)?;
    }
    replace_in_sum(ctx, icmp_csum_off, 0, address_diff, 0)?;
    replace_in_sum(ctx, icmp_csum_off, old_port, new_port, 2)?;
    ctx.store(change.address_off, change.new_address, 0).map_err(|_| Counter::DropRewriteFailed)?;
    ctx.store(change.port_off, &change.new_port_be, 0).map_err(|_| Counter::DropRewriteFailed)
}

/// Adds `new - old` (of `size` bytes; 0: `new` is a difference already) to
/// the 16-bit one's-complement sum at `off`, as plain arithmetic: the
/// fields changed here are inside the ICMPv6 message, never a
/// pseudo-header of this packet.
#[inline(always)]
fn replace_in_sum(ctx: &TcContext, off: usize, old: u32, new: u32, size: u64) -> Result<(), Counter> {
    ctx.l4_csum_replace(off, old as u64, new as u64, size).map_err(|_| Counter::DropRewriteFailed)
}
