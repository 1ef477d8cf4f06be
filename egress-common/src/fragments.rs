//! Fragments. Only a datagram's first fragment carries its ports, so the
//! flow it belongs to is remembered under what every fragment of the
//! datagram shares (RFC 791: source, destination, protocol and
//! identification; RFC 8200 for IPv6) until its later fragments have
//! passed. Nothing is
//! reassembled: each fragment is translated and sent on as it comes, in
//! bounded memory (an LRU map) and bounded time ([`FRAGMENT_TIMEOUT_NS`]).
//!
//! And a reply that does not fit the tunnel with DF clear is sent as two
//! fragments: [`split_payload`] says where to cut it.

use crate::{
    allowance::Allowance,
    conntrack::{FlowTuple, FlowTuple6},
};

/// What all fragments of one datagram share (RFC 791).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    pub src_ip_be: u32,
    pub dst_ip_be: u32,
    pub id_be: u16,
    pub protocol: u8,
    pub _pad0: u8,
}

impl FragmentKey {
    pub const fn new(src_ip_be: u32, dst_ip_be: u32, id_be: u16, protocol: u8) -> FragmentKey {
        FragmentKey { src_ip_be, dst_ip_be, id_be, protocol, _pad0: 0 }
    }
}

/// The flow a datagram's first fragment was translated with: the key of
/// its binding in the conntrack half the fragments arrive on, and which
/// binding it was (a port bound again since is another client's).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentFlow {
    pub tuple: FlowTuple,
    pub client_id: u32,
    pub _pad0: u32,
    /// The binding's `NatEntry::created_ns`; 0: any binding of `client_id`.
    pub binding_created_ns: u64,
    /// When the first fragment passed (`bpf_ktime_get_ns`).
    pub first_seen_ns: u64,
}

/// What all fragments of one IPv6 datagram share (RFC 8200 4.5: source,
/// destination and identification; the protocol after the fragment
/// header too, as it is in every fragment here: only a fragment header
/// right after the fixed one is translated).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragmentKey6 {
    pub src_ip: [u8; 16],
    pub dst_ip: [u8; 16],
    pub id_be: u32,
    pub protocol: u8,
    /// Two scalars, as in `FlowTuple6`: a byte array would be zeroed by a
    /// `memset` call the BPF verifier counts as a call frame.
    pub _pad0: u8,
    pub _pad1: u16,
}

impl FragmentKey6 {
    pub const fn new(src_ip: [u8; 16], dst_ip: [u8; 16], id_be: u32, protocol: u8) -> FragmentKey6 {
        FragmentKey6 { src_ip, dst_ip, id_be, protocol, _pad0: 0, _pad1: 0 }
    }
}

/// [`FragmentFlow`] for IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentFlow6 {
    pub tuple: FlowTuple6,
    pub client_id: u32,
    pub _pad0: u32,
    pub binding_created_ns: u64,
    pub first_seen_ns: u64,
}

const _: () = assert!(core::mem::size_of::<FragmentKey6>() == 40);
const _: () = assert!(core::mem::size_of::<FragmentFlow6>() == 64);

/// The fields of an IPv6 fragment header (RFC 8200 4.5) after its next
/// header: the offset in 8-byte units (13 bits), 2 reserved bits, M.
pub const IPV6_FRAGMENT_MORE: u16 = 0x0001;

/// Datagrams in flight whose flow is remembered, per gateway. An LRU: a
/// flood of first fragments pushes out the oldest entries, never memory.
pub const FRAGMENTS_MAX: u32 = 16_384;

/// How many first fragments of one client's flows (both ways) may be
/// remembered: 1,024 at once, then 16,384 a second, the whole map's worth.
/// One client spraying first fragments then turns the map over once a
/// second at most, so everyone else's entries outlive the microseconds
/// their later fragments take by far; it takes dozens of colluding pods
/// to come near. The cost to an honest pod: over 16,384 fragmented
/// datagrams a second (about 400 Mbit/s of 3000-byte datagrams), the rest
/// are dropped (`drop_fragment_over_budget`).
pub const FIRST_FRAGMENTS: Allowance =
    Allowance { interval_ns: 1_000_000_000 / FRAGMENTS_MAX as u64, burst: 1_024 };

/// How long later fragments may follow their first. They come within
/// microseconds (a sender sends a datagram's fragments back to back); a
/// few seconds cover a slow path and the resegmentation pair's detour, and
/// keep a datagram whose IP ID comes round again later (a remote's IDs
/// towards the gateway are shared by every client's flows) from meeting
/// an old datagram's entry.
pub const FRAGMENT_TIMEOUT_NS: u64 = 5_000_000_000;

/// IPv4 `frag_off` bits (host order).
pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET_MASK: u16 = 0x1fff;

/// The most bytes the second part of a split reply may hold: a packet
/// eth0 delivered is at most its MTU, so the cut leaves at most 57 bytes
/// (see `split_payload`); anything longer was not such a packet.
pub const SPLIT_TAIL_MAX: usize = 64;

/// Where a reply's IPv4 payload of `payload_len` bytes is cut to fit a
/// tunnel whose inner packets may be `tunnel_mtu` bytes long: the first
/// part's length (a multiple of 8, as fragment offsets count 8-byte units)
/// and the second's. None when it fits whole, or when the second part
/// would need a cut of its own (longer than [`SPLIT_TAIL_MAX`]).
pub const fn split_payload(payload_len: u32, tunnel_mtu: u32) -> Option<(u32, u32)> {
    const IPV4_HLEN: u32 = 20;
    if tunnel_mtu < IPV4_HLEN + 8 || payload_len + IPV4_HLEN <= tunnel_mtu {
        return None;
    }
    let first = (tunnel_mtu - IPV4_HLEN) / 8 * 8;
    let second = payload_len - first;
    if second as usize > SPLIT_TAIL_MAX {
        return None;
    }
    Some((first, second))
}

/// The `frag_off` fields (host order, DF clear) of the two parts a packet
/// whose own `frag_off` is `frag_off` becomes when cut after `first_len`
/// payload bytes: the first part keeps its offset and says more follow,
/// the second starts `first_len` further on and ends where the packet
/// ended. None if the second offset would not fit 13 bits (a forged one).
pub const fn split_frag_offsets(frag_off: u16, first_len: u32) -> Option<(u16, u16)> {
    let offset = (frag_off & IP_OFFSET_MASK) as u32;
    let second_offset = offset + first_len / 8;
    if second_offset > IP_OFFSET_MASK as u32 {
        return None;
    }
    Some((offset as u16 | IP_MF, second_offset as u16 | (frag_off & IP_MF)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_size_reply_is_cut_into_a_tunnel_sized_part_and_a_short_one() {
        // eth0 1500: the tunnel carries 1450; 1424 is the largest multiple
        // of 8 that fits with a 20-byte header.
        assert_eq!(split_payload(1480, 1450), Some((1424, 56)));
        assert_eq!(split_payload(1431, 1450), Some((1424, 7)));
        assert_eq!(split_payload(1430, 1450), None, "fits whole");
        // Jumbo frames: 9000 - 20 payload, 8950 tunnel.
        assert_eq!(split_payload(8980, 8950), Some((8928, 52)));
        assert_eq!(split_payload(1500, 1450), None, "a second cut would be needed");
        assert_eq!(split_payload(100, 10), None);
    }

    #[test]
    fn parts_carry_their_offsets_and_the_more_fragments_bit() {
        // A whole datagram: 0 and 1424 / 8 = 178, the last without MF.
        assert_eq!(split_frag_offsets(0, 1424), Some((IP_MF, 178)));
        // A middle fragment at 1480 bytes (185 units): both parts say more.
        assert_eq!(split_frag_offsets(IP_MF | 185, 1424), Some((IP_MF | 185, IP_MF | 363)));
        // The last fragment keeps its end.
        assert_eq!(split_frag_offsets(185, 1424), Some((IP_MF | 185, 363)));
        // DF (clear on anything we cut) never leaks into the parts.
        assert_eq!(split_frag_offsets(IP_DF, 1424), Some((IP_MF, 178)));
        assert_eq!(split_frag_offsets(IP_OFFSET_MASK, 1424), None);
    }
}
