//! Header rewrites with incremental checksum updates through the kernel's
//! helpers (which also handle CHECKSUM_PARTIAL GSO packets correctly). A
//! helper that fails says so as `drop_rewrite_failed`.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    helpers::bpf_csum_diff,
    programs::TcContext,
};
use egress_common::counters::Counter;

use crate::headers::{l4_csum_off, Ipv4Header, IPPROTO_ICMP, IPPROTO_UDP, IP_CSUM_OFF, IP_TTL_OFF};

/// Flags for an L4 checksum update. UDP's zero checksum means "none" and
/// must stay zero (BPF_F_MARK_MANGLED_0).
#[inline(always)]
fn l4_flags(protocol: u8, size: u64, pseudo: bool) -> u64 {
    let mut flags = size;
    if pseudo {
        flags |= BPF_F_PSEUDO_HDR as u64;
    }
    if protocol == IPPROTO_UDP {
        flags |= BPF_F_MARK_MANGLED_0 as u64;
    }
    flags
}

/// Updates the L4 checksum (TCP, UDP) of the packet whose IPv4 address
/// `old_be` becomes `new_be`: its pseudo-header holds the address. ICMP
/// has none.
#[inline(always)]
pub fn update_l4_for_addr(
    ctx: &TcContext,
    l4_off: usize,
    protocol: u8,
    old_be: u32,
    new_be: u32,
) -> Result<(), Counter> {
    if protocol == IPPROTO_ICMP {
        return Ok(());
    }
    ctx.l4_csum_replace(
        l4_off + l4_csum_off(protocol),
        old_be as u64,
        new_be as u64,
        l4_flags(protocol, 4, true),
    )
    .map_err(|_| Counter::DropRewriteFailed)
}

/// Updates the L4 checksum (TCP, UDP, ICMPv6) of the packet whose IPv6
/// address `old` becomes `new`: every IPv6 pseudo-header holds both
/// addresses, ICMPv6's included. The difference is summed here, straight
/// line, and handed to the helper whole (its size-0 form).
#[inline(always)]
pub fn update_l4_for_addr6(
    ctx: &TcContext,
    l4_off: usize,
    protocol: u8,
    old: &[u8; 16],
    new: &[u8; 16],
) -> Result<(), Counter> {
    let diff = address_diff6(old, new)?;
    ctx.l4_csum_replace(l4_off + l4_csum_off(protocol), 0, diff as u64, l4_flags(protocol, 0, true))
        .map_err(|_| Counter::DropRewriteFailed)
}

/// The one's-complement difference `new - old` of two IPv6 addresses, by
/// the kernel's `bpf_csum_diff`: summed here, the addresses' bytes went
/// one by one through registers and stack slots (the verifier's 512 bytes
/// of stack could not hold them with the rest of a reply's path).
#[inline(always)]
pub fn address_diff6(old: &[u8; 16], new: &[u8; 16]) -> Result<u32, Counter> {
    // SAFETY: the helper reads 16 bytes from each, which both hold.
    let diff = unsafe { bpf_csum_diff(old.as_ptr() as *mut u32, 16, new.as_ptr() as *mut u32, 16, 0) };
    if diff < 0 {
        return Err(Counter::DropRewriteFailed);
    }
    Ok(diff as u32)
}

/// The 12 bytes of an IPv4 header from the TTL on: what a NAT hop changes.
#[repr(C)]
struct HopTail {
    ttl: u8,
    protocol: u8,
    check: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

/// One router hop's rewrite of the IPv4 header at `ip_off` (described by
/// `ip`): the addresses become `src_be` and `dst_be`, the TTL drops by one
/// (the caller has checked it is above 1), and the header checksum follows
/// by RFC 1624's update, `~(~HC + ~m + m')` over the changed words.
///
/// Computed here rather than by `bpf_l3_csum_replace`: the IPv4 header
/// checksum is never offloaded (GSO recomputes it per segment), so two
/// helper calls and three stores become a 2-byte load and one store. The
/// checksum is read now, not taken from `ip`: a step since (the ECN merge)
/// may have changed it.
#[inline(always)]
pub fn rewrite_ipv4_hop(
    ctx: &TcContext,
    ip_off: usize,
    ip: &Ipv4Header,
    src_be: u32,
    dst_be: u32,
) -> Result<(), Counter> {
    let check: [u8; 2] = ctx.load(ip_off + IP_CSUM_OFF).map_err(|_| Counter::DropMalformed)?;
    let ttl = ip.ttl - 1;
    let words = |ttl: u8, src_be: u32, dst_be: u32| -> [u32; 5] {
        let (src, dst) = (u32::from_be(src_be), u32::from_be(dst_be));
        [((ttl as u32) << 8) | ip.protocol as u32, src >> 16, src & 0xffff, dst >> 16, dst & 0xffff]
    };
    let (old, new) = (words(ip.ttl, ip.src_be, ip.dst_be), words(ttl, src_be, dst_be));
    let mut sum = !u16::from_be_bytes(check) as u32;
    for i in 0..5 {
        sum += (0xffff - old[i]) + new[i];
    }
    let tail = HopTail {
        ttl,
        protocol: ip.protocol,
        check: fold(sum).to_be_bytes(),
        src: src_be.to_ne_bytes(),
        dst: dst_be.to_ne_bytes(),
    };
    ctx.store(ip_off + IP_TTL_OFF, &tail, 0).map_err(|_| Counter::DropRewriteFailed)
}

/// Rewrites a 16-bit IPv4 header field (host order values) and the IP
/// checksum.
#[inline(always)]
pub fn rewrite_ipv4_word(
    ctx: &TcContext,
    ip_off: usize,
    field_off: usize,
    old: u16,
    new: u16,
) -> Result<(), Counter> {
    let (old_be, new_be) = (old.to_be(), new.to_be());
    ctx.l3_csum_replace(ip_off + IP_CSUM_OFF, old_be as u64, new_be as u64, 2)
        .map_err(|_| Counter::DropRewriteFailed)?;
    ctx.store(ip_off + field_off, &new_be, 0).map_err(|_| Counter::DropRewriteFailed)
}

/// The sum (unfolded) of `len` bytes at `off`, read four at a time, for
/// an ICMP error that quotes them; at most `MAX` bytes are read.
#[inline(always)]
pub fn quote_sum<const MAX: usize>(ctx: &TcContext, off: usize, len: usize) -> Result<u32, Counter> {
    let mut sum: u32 = 0;
    let mut at = 0;
    for _ in 0..MAX / 4 {
        if at + 4 > len {
            break;
        }
        let word: [u8; 4] = ctx.load(off + at).map_err(|_| Counter::DropMalformed)?;
        sum += u16::from_be_bytes([word[0], word[1]]) as u32 + u16::from_be_bytes([word[2], word[3]]) as u32;
        at += 4;
    }
    if at + 2 <= len {
        let half: [u8; 2] = ctx.load(off + at).map_err(|_| Counter::DropMalformed)?;
        sum += u16::from_be_bytes(half) as u32;
        at += 2;
    }
    if at < len {
        let byte: u8 = ctx.load(off + at).map_err(|_| Counter::DropMalformed)?;
        sum += (byte as u32) << 8;
    }
    Ok(sum)
}

/// Rewrites a 16-bit port (or ICMP identifier) at `l4_off + field_off`.
#[inline(always)]
pub fn rewrite_l4_port(
    ctx: &TcContext,
    l4_off: usize,
    field_off: usize,
    protocol: u8,
    old_be: u16,
    new_be: u16,
) -> Result<(), Counter> {
    if old_be == new_be {
        return Ok(());
    }
    ctx.l4_csum_replace(
        l4_off + l4_csum_off(protocol),
        old_be as u64,
        new_be as u64,
        l4_flags(protocol, 2, false),
    )
    .map_err(|_| Counter::DropRewriteFailed)?;
    ctx.store(l4_off + field_off, &new_be, 0).map_err(|_| Counter::DropRewriteFailed)
}

/// Checksum of an option-less IPv4 header with no fragment bits, from its
/// variable fields (host order). Straight-line arithmetic: a loop over a
/// stack buffer costs the verifier far more than these adds.
#[inline(always)]
pub fn ipv4_header_checksum(
    tos: u8,
    total_len: u16,
    id: u16,
    ttl: u8,
    protocol: u8,
    src: u32,
    dst: u32,
) -> u16 {
    let sum: u32 = (0x4500 | tos as u32)
        + total_len as u32
        + id as u32
        + (((ttl as u32) << 8) | protocol as u32)
        + (src >> 16)
        + (src & 0xffff)
        + (dst >> 16)
        + (dst & 0xffff);
    fold(sum)
}

/// The Internet checksum of a 32-bit sum of 16-bit words: the carries
/// folded back in, then the one's complement.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}
