//! The last step of everything that goes back to a client (a translated
//! reply, a translated ICMP error): the tunnel to its worker, and the
//! client's traffic count.
use aya_ebpf::programs::TcContext;
use egress_common::{config::GatewayConfig, conntrack::NatEntry, counters::Counter};

use crate::{
    maps::{account, Direction},
    tunnel::encap::push_tunnel,
};

/// Encapsulates the translated packet towards `entry`'s worker and counts
/// it as `segments` wire packets and `bytes` of IPv4 (both read before the
/// tunnel is pushed: `bpf_skb_adjust_room` zeroes a GSO packet's
/// `gso_segs`, and the tunnel is not the client's traffic).
#[inline(always)]
pub fn nat_v4_to_client(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    entry: &NatEntry,
    segments: u64,
    bytes: u64,
) -> Result<(), Counter> {
    push_tunnel(ctx, cfg, entry)?;
    account(entry.client_id, Direction::ToClient, segments, bytes);
    Ok(())
}
