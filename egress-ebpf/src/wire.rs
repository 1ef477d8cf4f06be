//! Headers the datapath writes itself, exactly as on the wire.
use aya_ebpf::helpers::bpf_get_prandom_u32;
use egress_common::{checksum::pseudo_header_sum_v6, config::IPV6_MIN_MTU};

use crate::{
    csum,
    headers::{ICMP_HLEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPV4_HLEN, IPV6_HLEN},
};

/// An option-less IPv4 header as written on the wire (no fragment bits),
/// for the headers the paths build themselves.
#[repr(C, packed)]
pub struct Ipv4Wire {
    version_ihl: u8,
    tos: u8,
    total_len_be: u16,
    id_be: u16,
    frag_off_be: u16,
    ttl: u8,
    protocol: u8,
    csum_be: u16,
    src_be: u32,
    dst_be: u32,
}

const _: () = assert!(core::mem::size_of::<Ipv4Wire>() == IPV4_HLEN);

impl Ipv4Wire {
    /// The header, checksum included. `id` is a fresh identification: the
    /// header's DF bit is clear, so the packet may be fragmented on its way,
    /// and RFC 6864 wants the IDs of such packets to differ.
    #[inline(always)]
    pub fn new(
        total_len: u16,
        tos: u8,
        id: u16,
        ttl: u8,
        protocol: u8,
        src_be: u32,
        dst_be: u32,
    ) -> Ipv4Wire {
        let csum = crate::csum::ipv4_header_checksum(
            tos,
            total_len,
            id,
            ttl,
            protocol,
            u32::from_be(src_be),
            u32::from_be(dst_be),
        );
        Ipv4Wire {
            version_ihl: 0x45,
            tos,
            total_len_be: total_len.to_be(),
            id_be: id.to_be(),
            frag_off_be: 0,
            ttl,
            protocol,
            csum_be: csum.to_be(),
            src_be,
            dst_be,
        }
    }
}

/// The most of a packet the gateway's own ICMP errors quote: the answer
/// then stays within 576 bytes (RFC 1812 4.3.2.3), and within any tunnel.
pub const ICMP_ANSWER_MAX_QUOTE: usize = 576 - ICMP_ANSWER_HLEN;
/// What such an answer puts in front of the packet it quotes.
pub const ICMP_ANSWER_HLEN: usize = IPV4_HLEN + ICMP_HLEN;

/// The IPv4 and ICMP headers of an ICMP error of the gateway's own (time
/// exceeded to a client, fragmentation needed to a remote), as Linux
/// writes its: TTL 64, precedence "internetwork control", a fresh ID.
#[repr(C, packed)]
pub struct IcmpAnswer {
    ip: Ipv4Wire,
    icmp_type: u8,
    icmp_code: u8,
    icmp_csum_be: u16,
    /// The type's second header word (zero, or a next-hop MTU), host order.
    rest_be: u32,
}

const _: () = assert!(core::mem::size_of::<IcmpAnswer>() == ICMP_ANSWER_HLEN);

impl IcmpAnswer {
    /// The answer quoting `quote_len` bytes whose unfolded sum is
    /// `quote_sum` (`csum::quote_sum`), checksum included.
    #[inline(always)]
    pub fn new(
        (icmp_type, icmp_code, rest): (u8, u8, u32),
        quote_len: usize,
        quote_sum: u32,
        src_be: u32,
        dst_be: u32,
    ) -> IcmpAnswer {
        let header_sum = (((icmp_type as u32) << 8) | icmp_code as u32) + (rest >> 16) + (rest & 0xffff);
        IcmpAnswer {
            ip: Ipv4Wire::new(
                (ICMP_ANSWER_HLEN + quote_len) as u16,
                ICMP_ANSWER_TOS,
                unsafe { bpf_get_prandom_u32() } as u16,
                ICMP_ANSWER_TTL,
                IPPROTO_ICMP,
                src_be,
                dst_be,
            ),
            icmp_type,
            icmp_code,
            icmp_csum_be: csum::fold(quote_sum + header_sum).to_be(),
            rest_be: rest.to_be(),
        }
    }
}

const ICMP_ANSWER_TTL: u8 = 64;
/// IPTOS_PREC_INTERNETCONTROL: the precedence Linux gives its ICMP errors.
const ICMP_ANSWER_TOS: u8 = 0xc0;

/// A fixed IPv6 header as written on the wire, flow label 0, for the
/// headers the paths build themselves.
#[repr(C, packed)]
pub struct Ipv6Wire {
    version_class_flow_be: u32,
    payload_len_be: u16,
    next_header: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<Ipv6Wire>() == IPV6_HLEN);

impl Ipv6Wire {
    /// Writes the header's fields in place: built whole and then copied,
    /// it would take its 40 bytes of stack (`encap::write_tunnel_header6`).
    #[inline(always)]
    pub fn fill(
        &mut self,
        traffic_class: u8,
        payload_len: u16,
        next_header: u8,
        hop_limit: u8,
        src: &[u8; 16],
        dst: &[u8; 16],
    ) {
        self.version_class_flow_be = ((6u32 << 28) | ((traffic_class as u32) << 20)).to_be();
        self.payload_len_be = payload_len.to_be();
        self.next_header = next_header;
        self.hop_limit = hop_limit;
        // Word by word: a 16-byte array assigned into a packed struct
        // became a call to `memmove`, a subprogram whose frame the
        // verifier adds to the caller's (too much on Linux 6.1).
        write_address(core::ptr::addr_of_mut!(self.src), src);
        write_address(core::ptr::addr_of_mut!(self.dst), dst);
    }

    #[inline(always)]
    pub fn new(
        traffic_class: u8,
        payload_len: u16,
        next_header: u8,
        hop_limit: u8,
        src: &[u8; 16],
        dst: &[u8; 16],
    ) -> Ipv6Wire {
        Ipv6Wire {
            version_class_flow_be: ((6u32 << 28) | ((traffic_class as u32) << 20)).to_be(),
            payload_len_be: payload_len.to_be(),
            next_header,
            hop_limit,
            src: *src,
            dst: *dst,
        }
    }
}

/// Stores `address` at `to` (unaligned) as two 8-byte words. The reads
/// are volatile: a plain copy between two map values (the config's
/// address into the header scratch), which LLVM cannot tell apart, is
/// lowered to a call to `memmove`.
#[inline(always)]
fn write_address(to: *mut [u8; 16], address: &[u8; 16]) {
    let from = address.as_ptr() as *const [u8; 8];
    let to = to as *mut u64;
    // SAFETY: `address` is 16 readable bytes and `to` 16 writable ones;
    // [u8; 8] has alignment 1, and the writes are unaligned.
    unsafe {
        let high = u64::from_ne_bytes(core::ptr::read_volatile(from));
        let low = u64::from_ne_bytes(core::ptr::read_volatile(from.add(1)));
        core::ptr::write_unaligned(to, high);
        core::ptr::write_unaligned(to.add(1), low);
    }
}

/// The most of a packet the gateway's own ICMPv6 errors quote: as much as
/// keeps the error within IPv6's minimum MTU (RFC 4443 2.4 (c)).
pub const ICMP6_ANSWER_MAX_QUOTE: usize = IPV6_MIN_MTU - ICMP6_ANSWER_HLEN;
/// What such an error puts in front of the packet it quotes.
pub const ICMP6_ANSWER_HLEN: usize = IPV6_HLEN + ICMP_HLEN;

/// The IPv6 and ICMPv6 headers of an ICMPv6 error of the gateway's own
/// (time exceeded to a client, Packet Too Big to a remote), as Linux
/// writes its: traffic class 0, no flow label, hop limit 64.
#[repr(C, packed)]
pub struct Icmp6Answer {
    ip: Ipv6Wire,
    icmp_type: u8,
    icmp_code: u8,
    icmp_csum_be: u16,
    /// The type's second header word (zero, or Packet Too Big's MTU).
    rest_be: u32,
}

const _: () = assert!(core::mem::size_of::<Icmp6Answer>() == ICMP6_ANSWER_HLEN);

impl Icmp6Answer {
    /// The error from `src` to `dst` quoting `quote_len` bytes whose
    /// unfolded sum is `quote_sum` (`csum::quote_sum`), checksum included:
    /// ICMPv6's covers the pseudo-header too (RFC 4443 2.3).
    #[inline(always)]
    pub fn new(
        (icmp_type, icmp_code, rest): (u8, u8, u32),
        quote_len: usize,
        quote_sum: u32,
        src: &[u8; 16],
        dst: &[u8; 16],
    ) -> Icmp6Answer {
        let icmp_len = (ICMP_HLEN + quote_len) as u32;
        let header_sum = (((icmp_type as u32) << 8) | icmp_code as u32) + (rest >> 16) + (rest & 0xffff);
        let sum = pseudo_header_sum_v6(*src, *dst, IPPROTO_ICMPV6, icmp_len) + header_sum + quote_sum;
        Icmp6Answer {
            ip: Ipv6Wire::new(0, icmp_len as u16, IPPROTO_ICMPV6, ICMP_ANSWER_TTL, src, dst),
            icmp_type,
            icmp_code,
            icmp_csum_be: csum::fold(sum).to_be(),
            rest_be: rest.to_be(),
        }
    }
}
