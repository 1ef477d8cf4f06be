//! Header rewrites with incremental checksum updates through the kernel's
//! helpers (which also handle CHECKSUM_PARTIAL GSO packets correctly). A
//! helper that fails says so as `drop_rewrite_failed`.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use egress_common::counters::Counter;

use crate::headers::{l4_csum_off, IPPROTO_ICMP, IPPROTO_UDP, IP_CSUM_OFF, IP_TTL_OFF};

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

/// Rewrites the IPv4 address at `ip_off + field_off` from `old_be` to
/// `new_be`, fixing the IP checksum and, for TCP/UDP, the L4 checksum whose
/// pseudo-header includes it.
#[inline(always)]
pub fn rewrite_ipv4_addr(
    ctx: &TcContext,
    ip_off: usize,
    field_off: usize,
    l4_off: usize,
    protocol: u8,
    old_be: u32,
    new_be: u32,
) -> Result<(), Counter> {
    if protocol != IPPROTO_ICMP {
        ctx.l4_csum_replace(
            l4_off + l4_csum_off(protocol),
            old_be as u64,
            new_be as u64,
            l4_flags(protocol, 4, true),
        )
        .map_err(|_| Counter::DropRewriteFailed)?;
    }
    rewrite_ipv4_addr_only(ctx, ip_off, field_off, old_be, new_be)
}

/// Rewrites the IPv4 address at `ip_off + field_off` and the IP checksum
/// only: for a fragment that carries no L4 header (its datagram's L4
/// checksum, in the first fragment, was updated there).
#[inline(always)]
pub fn rewrite_ipv4_addr_only(
    ctx: &TcContext,
    ip_off: usize,
    field_off: usize,
    old_be: u32,
    new_be: u32,
) -> Result<(), Counter> {
    ctx.l3_csum_replace(ip_off + IP_CSUM_OFF, old_be as u64, new_be as u64, 4)
        .map_err(|_| Counter::DropRewriteFailed)?;
    ctx.store(ip_off + field_off, &new_be, 0).map_err(|_| Counter::DropRewriteFailed)
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

/// Forwarding is a router hop: decrement the TTL (the caller has checked it
/// is above 1) and patch the IP checksum for the TTL/protocol word.
#[inline(always)]
pub fn decrement_ttl(ctx: &TcContext, ip_off: usize, ttl: u8, protocol: u8) -> Result<(), Counter> {
    let old_word = u16::from_ne_bytes([ttl, protocol]);
    let new_word = u16::from_ne_bytes([ttl - 1, protocol]);
    ctx.l3_csum_replace(ip_off + IP_CSUM_OFF, old_word as u64, new_word as u64, 2)
        .map_err(|_| Counter::DropRewriteFailed)?;
    ctx.store(ip_off + IP_TTL_OFF, &(ttl - 1), 0).map_err(|_| Counter::DropRewriteFailed)
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
