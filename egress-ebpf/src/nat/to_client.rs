//! The last step of everything that goes back to a client (a translated
//! reply, a translated ICMP error): the tunnel to its worker, and the
//! client's traffic count.
use aya_ebpf::programs::TcContext;
use egress_common::{
    config::GatewayConfig,
    conntrack::{NatEntry6, FLOW_OUTER_IPV6},
    counters::Counter,
};

use crate::{
    headers::{ETH_HLEN, IPV4_HLEN},
    maps::{account, Direction},
    tunnel::encap::{push_tunnel, push_tunnel6, TunnelTarget, TunnelTarget6},
};

/// Where the IPv4 header and what follows it sit in a packet that came for
/// the gateway (ours never carry options).
pub const IP_OFF: usize = ETH_HLEN;
pub const L4_OFF: usize = ETH_HLEN + IPV4_HLEN;

/// What became of a packet addressed to the gateway.
///
/// As wide as [`Counter`]: in a `Result<Returned, Counter>` either variant
/// then fills the payload's 32 bits. A one-byte `Returned` left the upper
/// bits undefined on the `Ok` paths, and LLVM, merging those paths with the
/// `Err` ones, read that undefined register, which the verifier refuses
/// ("R5 !read_ok").
#[repr(u32)]
pub enum Returned {
    /// Not a reply of a client's flow: the pod's own business.
    NotOurs,
    /// Translated and encapsulated for the client's worker.
    ToClient,
    /// Too big to encapsulate whole: to be cut into segments, or have its
    /// checksum computed before it is cut into fragments (`tunnel::split`).
    Resegment,
    /// Too big for the tunnel with DF set: turned into the gateway's
    /// fragmentation-needed answer to the remote.
    FragNeeded,
}

/// Encapsulates the translated packet (either family) towards `target`,
/// client `client_id`'s worker, and counts it as `segments` wire packets
/// and `bytes` of inner IP (both read before the tunnel is pushed:
/// `bpf_skb_adjust_room` zeroes a GSO packet's `gso_segs`, and the tunnel
/// is not the client's traffic).
#[inline(always)]
pub fn tunnel_to_client(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    target: &TunnelTarget,
    client_id: u32,
    segments: u64,
    bytes: u64,
) -> Result<(), Counter> {
    push_tunnel(ctx, cfg, target)?;
    account(client_id, Direction::ToClient, segments, bytes);
    Ok(())
}

/// [`tunnel_to_client`] for a translated IPv6 packet of `entry`'s flow,
/// in the tunnel its client came in: over IPv6 (`FLOW_OUTER_IPV6`) or IPv4.
#[inline(always)]
pub fn tunnel_to_client6(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    entry: &NatEntry6,
    segments: u64,
    bytes: u64,
) -> Result<(), Counter> {
    if entry.flags & FLOW_OUTER_IPV6 != 0 {
        push_tunnel6(ctx, cfg, &TunnelTarget6::of(entry))?;
        account(entry.client_id, Direction::ToClient, segments, bytes);
        Ok(())
    } else {
        tunnel_to_client(ctx, cfg, &TunnelTarget::of6(entry), entry.client_id, segments, bytes)
    }
}
