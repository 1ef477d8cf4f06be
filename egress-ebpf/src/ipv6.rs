//! `egress_gateway6`: a labeled pod's IPv6 packets, carried in the same
//! IPv4 tunnel as its IPv4 ones (a dual-stack cluster).
//!
//! A program of its own, reached only by the main classifier's tail call
//! (`Verdict::ToIpv6Program`) once it has checked the outer headers, the
//! VNI and that the outer source is a labeled pod: the IPv4 paths already
//! take most of what the verifier accepts in one program
//! (`egress-agent/tests/prog_verifier.rs`).
//!
//! IPv6 egress is not translated yet (issue 14): every packet is dropped,
//! each for a reason, so a labeled pod's IPv6 never leaves with any
//! address but, one day, the gateway's.
use aya_ebpf::programs::TcContext;
use egress_common::{
    counters::Counter,
    ip::{
        is_martian_destination_v6, IPPROTO_ICMPV6, IPV6_EXT_DESTINATION_OPTIONS, IPV6_EXT_FRAGMENT,
        IPV6_EXT_HOP_BY_HOP, IPV6_EXT_ROUTING,
    },
};

use crate::{
    headers::{Ipv6Header, IPPROTO_TCP, IPPROTO_UDP, IPV6_HLEN},
    tunnel::decap::INNER_IP_OFF,
    verdict::Verdict,
};

/// No gateway IPv6 address yet: only the fixed martians apply (`::`, the
/// one this would add, is one of them).
const NO_GATEWAY_IP6: [u8; 16] = [0; 16];

#[inline(always)]
pub fn from_client(ctx: &TcContext) -> Verdict {
    match check_inner(ctx) {
        Ok(()) => Verdict::Drop(Counter::DropIpv6NotTranslated),
        Err(reason) => Verdict::Drop(reason),
    }
}

/// Checks the inner IPv6 packet as the translation will need it: whole,
/// its transport header right after the fixed header, to a destination
/// that may be NATed.
#[inline(always)]
fn check_inner(ctx: &TcContext) -> Result<(), Counter> {
    let ip = Ipv6Header::load(ctx, INNER_IP_OFF).map_err(|_| Counter::DropMalformed)?;
    if !ip.is_v6() {
        return Err(Counter::DropMalformed);
    }
    // The packet must be all there (a length that lies would leave as one).
    if (INNER_IP_OFF + IPV6_HLEN) as u32 + ip.payload_len as u32 > ctx.len() {
        return Err(Counter::DropMalformed);
    }
    match ip.next_header {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6 => {}
        IPV6_EXT_HOP_BY_HOP | IPV6_EXT_ROUTING | IPV6_EXT_FRAGMENT | IPV6_EXT_DESTINATION_OPTIONS => {
            return Err(Counter::DropIpv6ExtHeader)
        }
        _ => return Err(Counter::DropUnsupportedProtocol),
    }
    if is_martian_destination_v6(&ip.dst, &NO_GATEWAY_IP6) {
        return Err(Counter::DropMartianDestination);
    }
    Ok(())
}
