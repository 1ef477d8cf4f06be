//! Header layouts and fixed offsets. Fields keep wire byte order (`_be`).
use aya_ebpf::programs::TcContext;

pub const ETH_HLEN: usize = 14;
/// Where the ethertype sits in an Ethernet header.
pub const ETH_TYPE_OFF: usize = 12;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const UDP_HLEN: usize = 8;
pub const VXLAN_HLEN: usize = 8;
pub const ICMP_HLEN: usize = 8;
pub use egress_common::ip::{
    is_icmp_error, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMP_DEST_UNREACHABLE, ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST, ICMP_PARAMETER_PROBLEM, ICMP_TIME_EXCEEDED, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
    IPPROTO_UDP,
};

pub use egress_common::config::TUNNEL_OVERHEAD;
pub use egress_common::fragments::{IP_DF, IP_MF, IP_OFFSET_MASK};
const _: () = assert!(TUNNEL_OVERHEAD == IPV4_HLEN + UDP_HLEN + VXLAN_HLEN + ETH_HLEN);

/// Byte offsets inside an IPv4 header.
pub const IP_TOTAL_LEN_OFF: usize = 2;
pub const IP_FRAG_OFF: usize = 6;
pub const IP_TTL_OFF: usize = 8;
pub const IP_CSUM_OFF: usize = 10;
pub const IP_SRC_OFF: usize = 12;
pub const IP_DST_OFF: usize = 16;

pub const TCP_CSUM_OFF: usize = 16;
pub const UDP_CSUM_OFF: usize = 6;
pub const ICMP_CSUM_OFF: usize = 2;
pub const ICMP_ID_OFF: usize = 4;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The parts of an IPv4 header the paths decide on.
#[derive(Clone, Copy)]
pub struct Ipv4Header {
    pub version_ihl: u8,
    /// DSCP (upper six bits) and ECN (lower two).
    pub tos: u8,
    pub total_len: u16,
    /// Identification, as on the wire: what a datagram's fragments share.
    pub id_be: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub src_be: u32,
    pub dst_be: u32,
}

#[repr(C)]
struct RawIpv4 {
    version_ihl: u8,
    tos: u8,
    total_len: [u8; 2],
    id: [u8; 2],
    frag_off: [u8; 2],
    ttl: u8,
    protocol: u8,
    csum: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

impl Ipv4Header {
    #[inline(always)]
    pub fn load(ctx: &TcContext, off: usize) -> Result<Self, ()> {
        let raw: RawIpv4 = ctx.load(off).map_err(|_| ())?;
        Ok(Ipv4Header {
            version_ihl: raw.version_ihl,
            tos: raw.tos,
            total_len: u16::from_be_bytes(raw.total_len),
            id_be: u16::from_ne_bytes(raw.id),
            frag_off: u16::from_be_bytes(raw.frag_off),
            ttl: raw.ttl,
            protocol: raw.protocol,
            src_be: u32::from_ne_bytes(raw.src),
            dst_be: u32::from_ne_bytes(raw.dst),
        })
    }

    #[inline(always)]
    pub fn is_v4(&self) -> bool {
        self.version_ihl >> 4 == 4
    }

    #[inline(always)]
    pub fn header_len(&self) -> usize {
        ((self.version_ihl & 0x0f) as usize) * 4
    }

    #[inline(always)]
    pub fn has_options(&self) -> bool {
        self.version_ihl & 0x0f != 5
    }

    /// More-fragments set or a non-zero offset: part of a datagram.
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        self.frag_off & 0x3fff != 0
    }

    /// A fragment other than the first: it carries no L4 header at all.
    #[inline(always)]
    pub fn is_later_fragment(&self) -> bool {
        self.frag_off & IP_OFFSET_MASK != 0
    }

    /// The first fragment of a datagram that has more.
    #[inline(always)]
    pub fn is_first_fragment(&self) -> bool {
        self.frag_off & (IP_MF | IP_OFFSET_MASK) == IP_MF
    }

    #[inline(always)]
    pub fn dont_fragment(&self) -> bool {
        self.frag_off & IP_DF != 0
    }
}

/// The L4 fields NAT works on. For ICMP echo the identifier is `src_port_be`
/// of a request and `dst_port_be` of a reply (see `FlowTuple`).
#[derive(Clone, Copy)]
pub struct L4Ports {
    pub src_port_be: u16,
    pub dst_port_be: u16,
    /// TCP flags, or the ICMP type.
    pub flags_or_type: u8,
}

/// Reads ports (or the ICMP or ICMPv6 echo identifier) at `off`. `Err`
/// means truncated; `Ok(None)` means a protocol or ICMP type we do not
/// translate.
#[inline(always)]
pub fn load_l4(ctx: &TcContext, off: usize, protocol: u8) -> Result<Option<L4Ports>, ()> {
    match protocol {
        IPPROTO_TCP => {
            let b: [u8; 20] = ctx.load(off).map_err(|_| ())?;
            Ok(Some(L4Ports {
                src_port_be: u16::from_ne_bytes([b[0], b[1]]),
                dst_port_be: u16::from_ne_bytes([b[2], b[3]]),
                flags_or_type: b[13],
            }))
        }
        IPPROTO_UDP => {
            let b: [u8; 8] = ctx.load(off).map_err(|_| ())?;
            Ok(Some(L4Ports {
                src_port_be: u16::from_ne_bytes([b[0], b[1]]),
                dst_port_be: u16::from_ne_bytes([b[2], b[3]]),
                flags_or_type: 0,
            }))
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let b: [u8; 8] = ctx.load(off).map_err(|_| ())?;
            let id_be = u16::from_ne_bytes([b[4], b[5]]);
            match (protocol, b[0]) {
                (IPPROTO_ICMP, ICMP_ECHO_REQUEST) | (IPPROTO_ICMPV6, ICMPV6_ECHO_REQUEST) => {
                    Ok(Some(L4Ports { src_port_be: id_be, dst_port_be: 0, flags_or_type: b[0] }))
                }
                (IPPROTO_ICMP, ICMP_ECHO_REPLY) | (IPPROTO_ICMPV6, ICMPV6_ECHO_REPLY) => {
                    Ok(Some(L4Ports { src_port_be: 0, dst_port_be: id_be, flags_or_type: b[0] }))
                }
                _ => Ok(None),
            }
        }
        _ => Ok(None),
    }
}

/// Offset of the checksum field inside the L4 header (ICMP's and ICMPv6's
/// are at the same place).
#[inline(always)]
pub fn l4_csum_off(protocol: u8) -> usize {
    match protocol {
        IPPROTO_TCP => TCP_CSUM_OFF,
        IPPROTO_UDP => UDP_CSUM_OFF,
        _ => ICMP_CSUM_OFF,
    }
}

/// The parts of an IPv6 header the paths decide on. 8-byte aligned, like
/// `RawIpv6`, so its addresses move as two 8-byte words, not sixteen
/// bytes each through the registers (and their spill slots).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct Ipv6Header {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Version (4 bits), traffic class (8), the flow label's top 4 bits.
    pub first_word_high: u16,
    /// Bytes after the fixed header (extension headers included).
    pub payload_len: u16,
    pub next_header: u8,
    pub hop_limit: u8,
}

/// Byte offsets inside an IPv6 header.
pub const IPV6_NEXT_HEADER_OFF: usize = 6;
pub const IPV6_HOP_LIMIT_OFF: usize = 7;
pub const IPV6_SRC_OFF: usize = 8;
pub const IPV6_DST_OFF: usize = 24;

#[repr(C, align(8))]
struct RawIpv6 {
    first_word: [u8; 4],
    payload_len: [u8; 2],
    next_header: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

impl Ipv6Header {
    #[inline(always)]
    pub fn load(ctx: &TcContext, off: usize) -> Result<Self, ()> {
        let raw: RawIpv6 = ctx.load(off).map_err(|_| ())?;
        Ok(Ipv6Header {
            first_word_high: u16::from_be_bytes([raw.first_word[0], raw.first_word[1]]),
            payload_len: u16::from_be_bytes(raw.payload_len),
            next_header: raw.next_header,
            hop_limit: raw.hop_limit,
            src: raw.src,
            dst: raw.dst,
        })
    }

    /// The header at `off` of a whole IPv6 packet, or None: version 6, and
    /// all the payload its length claims is there (a length that lies
    /// would otherwise be sent on as it is).
    #[inline(always)]
    pub fn load_whole(ctx: &TcContext, off: usize) -> Option<Self> {
        let ip = Self::load(ctx, off).ok()?;
        let whole = ip.is_v6() && (off + IPV6_HLEN) as u32 + ip.payload_len as u32 <= ctx.len();
        whole.then_some(ip)
    }

    #[inline(always)]
    pub fn is_v6(&self) -> bool {
        self.first_word_high >> 12 == 6
    }

    /// The traffic class: DSCP (upper six bits) and ECN (lower two), as
    /// IPv4's TOS byte.
    #[inline(always)]
    pub fn traffic_class(&self) -> u8 {
        (self.first_word_high >> 4) as u8
    }
}
