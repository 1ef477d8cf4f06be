//! A reply that does not fit the tunnel but may be fragmented (DF clear)
//! is sent as two IPv4 fragments that fit, as Linux fragments what it
//! forwards into its VXLAN device: never dropped. A packet eth0 delivered
//! is at most eth0's MTU and the tunnel takes 50 bytes, so the first part
//! is as long as the tunnel allows and the second holds the last few
//! dozen bytes (`egress_common::fragments::split_payload`).
//!
//! One packet becomes two with a clone: the first part is cut, tunnelled
//! and cloned into the resegmentation pair, whose `egress_resegmented`
//! classifier sends it out of the attached interface (the clone cannot
//! resolve the next hop's MAC itself, as `bpf_redirect_neigh` does); the
//! packet then becomes the second part, which the caller sends. Replies
//! reach this only out of that pair (`Arrival::Resegmented`): its sending
//! end has no checksum offload, so a reply whose UDP checksum was left to
//! the hardware (CHECKSUM_PARTIAL, as a local sender's through veth) has
//! it computed over the whole datagram before anything is cut.
//!
//! ```text
//! in:        [eth][IPv4 | payload: first_len + tail_len]
//! clone:     [eth][tunnel][IPv4 MF, offset o      | first_len bytes]
//! the packet:[eth][tunnel][IPv4 offset o+first_len | tail_len bytes]
//! ```
use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    helpers::generated::{bpf_skb_change_tail, bpf_skb_load_bytes, bpf_skb_store_bytes},
    programs::TcContext,
};
use egress_common::{
    config::{GatewayConfig, TUNNEL_OVERHEAD},
    conntrack::NatEntry,
    counters::Counter,
    fragments::{split_frag_offsets, split_payload, SPLIT_TAIL_MAX},
};

use crate::{
    csum,
    headers::{Ipv4Header, ETH_HLEN, IPPROTO_UDP, IPV4_HLEN, IP_FRAG_OFF, IP_TOTAL_LEN_OFF},
    maps::{account, count, Direction, SPLIT_TAIL, SPLIT_TAIL_BUF},
    tunnel::encap::{write_tunnel_header, TunnelTarget},
};

const IP_OFF: usize = ETH_HLEN;
const TUNNELLED_IP_OFF: usize = ETH_HLEN + TUNNEL_OVERHEAD;

/// Sends the first part of the translated reply at `IP_OFF` (header `ip`)
/// to `entry`'s worker through the resegmentation pair and leaves the
/// packet as the second part, tunnelled to the same worker.
#[inline(always)]
pub fn send_in_two(
    ctx: &TcContext,
    cfg: &GatewayConfig,
    ip: &Ipv4Header,
    entry: &NatEntry,
) -> Result<(), Counter> {
    let bytes = ip.total_len as u64;
    let payload_len = (ip.total_len as u32).saturating_sub(IPV4_HLEN as u32);
    let tunnel_mtu = cfg.mtu.saturating_sub(TUNNEL_OVERHEAD as u32);
    let (first_len, tail_len) = split_payload(payload_len, tunnel_mtu).ok_or(Counter::DropTooBigForTunnel)?;
    let (first_frag, second_frag) =
        split_frag_offsets(ip.frag_off, first_len).ok_or(Counter::DropMalformed)?;
    let tail_len = tail_len as usize;
    if tail_len == 0 || tail_len > SPLIT_TAIL_MAX || cfg.resegment_ifindex == 0 {
        return Err(Counter::DropTooBigForTunnel);
    }
    let tail = SPLIT_TAIL.get_ptr_mut(0).ok_or(Counter::DropRewriteFailed)?;
    let tail_size = helper_size(tail_len);
    let first_end = IP_OFF + IPV4_HLEN + first_len as usize;
    // SAFETY: `tail` is this CPU's SPLIT_TAIL_BUF-byte map value and
    // `tail_size` is at most that.
    let ret =
        unsafe { bpf_skb_load_bytes(ctx.skb.skb as *const _, first_end as u32, tail.cast(), tail_size) };
    if ret != 0 {
        return Err(Counter::DropMalformed);
    }

    // The first part: the packet cut after `first_len` payload bytes.
    let first_total = (IPV4_HLEN as u32 + first_len) as u16;
    csum::rewrite_ipv4_word(ctx, IP_OFF, IP_TOTAL_LEN_OFF, ip.total_len, first_total)?;
    csum::rewrite_ipv4_word(ctx, IP_OFF, IP_FRAG_OFF, ip.frag_off, first_frag)?;
    change_tail(ctx, first_end)?;
    // A plain grow, not `push_tunnel`'s GSO-aware one: a packet marked as
    // encapsulated cannot have its tail changed (below).
    ctx.adjust_room(TUNNEL_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, 0).map_err(|_| Counter::DropRewriteFailed)?;
    let target = TunnelTarget::of(entry);
    write_tunnel_header(ctx, cfg, &target)?;
    ctx.clone_redirect(cfg.resegment_ifindex, 0).map_err(|_| Counter::DropRedirectFailed)?;

    // The second part: the same tunnel, the tail after a moved header.
    let second_total = (IPV4_HLEN + tail_len) as u16;
    change_tail(ctx, TUNNELLED_IP_OFF + IPV4_HLEN + tail_len)?;
    // SAFETY: as above; the packet has room for `tail_len` bytes there.
    let ret = unsafe {
        bpf_skb_store_bytes(ctx.skb.skb, (TUNNELLED_IP_OFF + IPV4_HLEN) as u32, tail.cast(), tail_size, 0)
    };
    if ret != 0 {
        return Err(Counter::DropRewriteFailed);
    }
    csum::rewrite_ipv4_word(ctx, TUNNELLED_IP_OFF, IP_TOTAL_LEN_OFF, first_total, second_total)?;
    csum::rewrite_ipv4_word(ctx, TUNNELLED_IP_OFF, IP_FRAG_OFF, first_frag, second_frag)?;
    write_tunnel_header(ctx, cfg, &target)?;
    count(Counter::ReplyFragmented);
    account(entry.client_id, Direction::ToClient, 2, bytes);
    Ok(())
}

/// `len` (1 to SPLIT_TAIL_MAX) as the verifier must see a helper's size:
/// bounded by the buffer in the instruction that passes it (a bound
/// checked earlier is lost when the value is spilled to the stack), so
/// masked after a read the compiler cannot see through. The value is
/// unchanged.
#[inline(always)]
fn helper_size(len: usize) -> u32 {
    const _: () = assert!(SPLIT_TAIL_MAX <= SPLIT_TAIL_BUF && SPLIT_TAIL_BUF.is_power_of_two());
    // SAFETY: a plain read of a local.
    let opaque = unsafe { core::ptr::read_volatile(&len) } as u32;
    (opaque.wrapping_sub(1) & (SPLIT_TAIL_BUF as u32 - 1)) + 1
}

#[inline(always)]
fn change_tail(ctx: &TcContext, len: usize) -> Result<(), Counter> {
    let ret = unsafe { bpf_skb_change_tail(ctx.skb.skb, len as u32, 0) };
    if ret == 0 {
        Ok(())
    } else {
        Err(Counter::DropRewriteFailed)
    }
}

/// Whether a packet out of the resegmentation pair is a first part
/// `send_in_two` cloned there, tunnelled already: from the gateway's
/// address to a worker's tunnel port. Only the datapath sends into the
/// pair, so it goes out as it is.
#[inline(always)]
pub fn is_cloned_part(ctx: &TcContext, cfg: &GatewayConfig) -> bool {
    let Ok(outer) = Ipv4Header::load(ctx, IP_OFF) else { return false };
    if outer.src_be != cfg.gateway_ip_be || outer.protocol != IPPROTO_UDP || outer.has_options() {
        return false;
    }
    match ctx.load::<[u8; 4]>(IP_OFF + IPV4_HLEN) {
        Ok(ports) => u16::from_ne_bytes([ports[2], ports[3]]) == cfg.vxlan_port_be,
        Err(_) => false,
    }
}
