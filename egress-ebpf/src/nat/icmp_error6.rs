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
//!
//! The quote may be of a first fragment, its transport header after a
//! fragment header: a router beyond the gateway whose MTU is below the
//! tunnel's answers each fragment of a client's datagram with Packet Too
//! Big, and without it the client would never learn to cut them smaller
//! (Linux's conntrack looks past the fragment header too). A later
//! fragment's quote has no ports and is the pod's.
use aya_ebpf::programs::TcContext;
use egress_common::{
    config::GatewayConfig,
    conntrack::{FlowTuple6, NatEntry6},
    counters::Counter,
    ip::{
        ICMPV6_DEST_UNREACHABLE, ICMPV6_ECHO_REQUEST, ICMPV6_PACKET_TOO_BIG, ICMPV6_PARAMETER_PROBLEM,
        ICMPV6_TIME_EXCEEDED, IPPROTO_ICMPV6, IPV6_EXT_FRAGMENT, IPV6_FRAGMENT_HLEN,
        IPV6_FRAGMENT_OFFSET_MASK,
    },
};

use crate::{
    conntrack::{self, Half},
    csum::address_diff6,
    headers::{
        l4_csum_off, Ipv6Header, ETH_HLEN, ICMP_CSUM_OFF, ICMP_HLEN, ICMP_ID_OFF, IPPROTO_TCP, IPPROTO_UDP,
        IPV6_DST_OFF, IPV6_HLEN, IPV6_NEXT_HEADER_OFF, IPV6_SRC_OFF,
    },
    maps::count,
    nat::{
        rewrite::{nat_v6_rewrite_headers, End, L4At},
        to_client::tunnel_to_client6,
    },
    tunnel::encap::fits_tunnel_of,
    verdict::Verdict,
};

const IP_OFF: usize = ETH_HLEN;
const ICMP_OFF: usize = IP_OFF + IPV6_HLEN;
const QUOTED_IP_OFF: usize = ICMP_OFF + ICMP_HLEN;
/// What `load_quote` reads of the quoted transport header: TCP or UDP
/// ports, or an echo's type, code, checksum and identifier.
const QUOTED_L4_READ: usize = 8;

/// The flow an error quotes, as the gateway sent it.
struct Quote {
    /// The quoted destination: the remote (the source is the gateway's).
    remote: [u8; 16],
    /// The quoted transport header: where it is, and its protocol.
    l4: L4At,
    /// The NAT port (or echo identifier) it was sent from.
    nat_port_be: u16,
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
    // Within the error itself, not only within the frame (which may be
    // padded past it).
    if quote.l4.off + QUOTED_L4_READ > ICMP_OFF + outer.payload_len as usize {
        return Verdict::NOT_OURS;
    }
    let tuple = FlowTuple6::new(
        quote.remote,
        cfg.gateway_ip6,
        quote.remote_port_be,
        quote.nat_port_be,
        quote.l4.protocol,
    );
    // An error does not keep its flow alive: no refresh, no state change.
    let Some((_, entry)) = conntrack::ct_lookup::<NatEntry6>(cfg, Half::Reply, &tuple, conntrack::now_ns())
    else {
        // An echo identifier in the NAT range may be the gateway pod's own
        // ping: its stack's business.
        return if quote.l4.protocol == IPPROTO_ICMPV6 {
            Verdict::NOT_OURS
        } else {
            Verdict::Drop(Counter::DropNoMapping)
        };
    };
    if outer.hop_limit <= 1 {
        return Verdict::Drop(Counter::DropTtlExceeded);
    }
    // An error carries at most 1280 bytes (RFC 4443 2.4), which fits a
    // tunnel whose link carries IPv6 (`join` wants eth0 at 1330 or more
    // for an IPv4 tunnel's IPv6, 1350 for an IPv6 tunnel); a longer one
    // may not.
    if !fits_tunnel_of(ctx, cfg, entry.tunnel_overhead()) {
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
/// from the gateway's IPv6 address (no extension headers but a first
/// fragment's), then TCP or UDP ports, or an echo request's identifier.
#[inline(always)]
fn load_quote(ctx: &TcContext, cfg: &GatewayConfig) -> Option<Quote> {
    // Field by field: a whole header beside its parsed copy does not fit
    // this program's stack.
    let head: [u8; 8] = ctx.load(QUOTED_IP_OFF).ok()?;
    let src: [u8; 16] = ctx.load(QUOTED_IP_OFF + IPV6_SRC_OFF).ok()?;
    if head[0] >> 4 != 6 || src != cfg.gateway_ip6 {
        return None;
    }
    let remote: [u8; 16] = ctx.load(QUOTED_IP_OFF + IPV6_DST_OFF).ok()?;
    let at = quoted_l4(ctx, QUOTED_IP_OFF, head[IPV6_NEXT_HEADER_OFF])?;
    let l4: [u8; QUOTED_L4_READ] = ctx.load(at.off).ok()?;
    let (nat_port_be, remote_port_be) = match at.protocol {
        IPPROTO_TCP | IPPROTO_UDP => (u16::from_ne_bytes([l4[0], l4[1]]), u16::from_ne_bytes([l4[2], l4[3]])),
        IPPROTO_ICMPV6 if l4[0] == ICMPV6_ECHO_REQUEST => (u16::from_ne_bytes([l4[4], l4[5]]), 0),
        _ => return None,
    };
    let quote = Quote { remote, l4: at, nat_port_be, remote_port_be };
    cfg.is_nat_port(u16::from_be(quote.nat_port_be)).then_some(quote)
}

/// Where a quoted packet's transport header is, and its protocol: right
/// after the fixed header at `quoted_ip_off` (whose next header is
/// `next_header`), or after a fragment header when the quote is of a
/// first fragment. A later fragment's quote holds no transport header:
/// None.
#[inline(always)]
pub fn quoted_l4(ctx: &TcContext, quoted_ip_off: usize, next_header: u8) -> Option<L4At> {
    let off = quoted_ip_off + IPV6_HLEN;
    if next_header != IPV6_EXT_FRAGMENT {
        return Some(L4At { off, protocol: next_header });
    }
    let fragment: [u8; 4] = ctx.load(off).ok()?;
    let offset = u16::from_be_bytes([fragment[2], fragment[3]]) & IPV6_FRAGMENT_OFFSET_MASK;
    (offset == 0).then_some(L4At { off: off + IPV6_FRAGMENT_HLEN, protocol: fragment[0] })
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
            quoted_l4: &quote.l4,
            address_off: QUOTED_IP_OFF + IPV6_SRC_OFF,
            old_address: &cfg.gateway_ip6,
            new_address: &entry.client_ip,
            port_off: quote.l4.off + if quote.l4.protocol == IPPROTO_ICMPV6 { ICMP_ID_OFF } else { 0 },
            old_port_be: quote.nat_port_be,
            new_port_be: entry.client_port_be,
        },
    )?;
    // The error itself now goes to the client, one hop on: its destination
    // in the pseudo-header too (the port arguments equal: no port here).
    nat_v6_rewrite_headers(ctx, IP_OFF, outer, End::Destination, &entry.client_ip, 0, 0)?;
    let bytes = (ctx.len() - ETH_HLEN as u32) as u64;
    tunnel_to_client6(ctx, cfg, entry, 1, bytes)
}

/// What a NAT changes in an ICMPv6 error's quote: one of the quoted
/// packet's addresses and its port (or echo identifier) on the same end.
pub struct QuoteRewrite<'a> {
    /// Where the ICMPv6 message starts, and where the error ends (its own
    /// length, not the frame's, which may be padded past it).
    pub icmp_off: usize,
    pub error_end: usize,
    /// The quoted packet's transport header (`quoted_l4`).
    pub quoted_l4: &'a L4At,
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
    let protocol = change.quoted_l4.protocol;
    // A first fragment's checksum covers the whole datagram: what changes
    // in it changes the same.
    let quoted_csum_off = change.quoted_l4.off + l4_csum_off(protocol);
    let before: u16 = ctx.load(quoted_csum_off).unwrap_or(0);
    // A zero UDP checksum means none (not in IPv6, and never ours): kept.
    let no_udp_checksum = protocol == IPPROTO_UDP && before == 0;
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
