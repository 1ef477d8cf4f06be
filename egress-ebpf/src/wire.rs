//! Headers the datapath writes itself, exactly as on the wire.
use crate::headers::IPV4_HLEN;

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
