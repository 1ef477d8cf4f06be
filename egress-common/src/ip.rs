//! IP numbers, one name each, shared by the program and the agent: the
//! protocols the gateway translates, the ICMP and ICMPv6 types it reads or
//! writes, and the destinations it must never translate.

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// ICMP for IPv6 (RFC 4443): its checksum, unlike ICMP's, covers a
/// pseudo-header with both addresses, so NAT must update it like TCP's.
pub const IPPROTO_ICMPV6: u8 = 58;

/// IPv6 extension headers the gateway recognises, to refuse them by name
/// (RFC 8200 4): hop-by-hop options, routing, fragment, destination options.
pub const IPV6_EXT_HOP_BY_HOP: u8 = 0;
pub const IPV6_EXT_ROUTING: u8 = 43;
pub const IPV6_EXT_FRAGMENT: u8 = 44;
pub const IPV6_EXT_DESTINATION_OPTIONS: u8 = 60;
/// Whether an IPv6 next-header value is one of the extension headers
/// above, which stand between the fixed header and the transport header.
#[inline(always)]
pub fn is_ipv6_extension_header(next_header: u8) -> bool {
    matches!(
        next_header,
        IPV6_EXT_HOP_BY_HOP | IPV6_EXT_ROUTING | IPV6_EXT_FRAGMENT | IPV6_EXT_DESTINATION_OPTIONS
    )
}

/// The fragment header's length, and the mask of its offset (in 8-byte
/// units, the upper 13 bits of its second 16-bit word): nonzero for every
/// fragment but the first.
pub const IPV6_FRAGMENT_HLEN: usize = 8;
pub const IPV6_FRAGMENT_OFFSET_MASK: u16 = 0xfff8;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_SOURCE_QUENCH: u8 = 4;
pub const ICMP_REDIRECT: u8 = 5;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

pub const ICMPV6_DEST_UNREACHABLE: u8 = 1;
/// Packet Too Big: IPv6 routers never fragment, so path MTU discovery
/// depends on this one reaching the sender (RFC 8201).
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
pub const ICMPV6_TIME_EXCEEDED: u8 = 3;
pub const ICMPV6_PARAMETER_PROBLEM: u8 = 4;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// Whether an ICMPv6 type is an error message: types 0-127 are errors,
/// 128-255 informational (RFC 4443 2.1). As for ICMP, none is ever sent
/// about an error.
#[inline(always)]
pub fn is_icmpv6_error(icmp_type: u8) -> bool {
    icmp_type < 128
}

/// Whether an ICMP type is an error message (RFC 1122 3.2.2). No ICMP
/// error is ever sent about one of these (RFC 1812 4.3.2.7), or two
/// routers could answer each other's errors forever.
#[inline(always)]
pub fn is_icmp_error(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        ICMP_DEST_UNREACHABLE
            | ICMP_SOURCE_QUENCH
            | ICMP_REDIRECT
            | ICMP_TIME_EXCEEDED
            | ICMP_PARAMETER_PROBLEM
    )
}

/// Whether `dst_be` (network order) is an address the gateway must never
/// NAT a client's packet to, whatever `--exclude-cidr` says:
///
/// - 0.0.0.0/8 ("this network", RFC 1122) and 127.0.0.0/8 (loopback): with
///   the gateway's source address they would reach the gateway pod's own
///   stack or a node's, not the internet;
/// - 224.0.0.0/4 (multicast) and 240.0.0.0/4 (reserved, with the limited
///   broadcast 255.255.255.255): one client's packet would go to many, under
///   the address every firewall trusts;
/// - the gateway's own address: a labeled pod would reach the gateway pod's
///   own listeners (its metrics, the agent's loopback endpoints through a
///   NAT port) from the gateway's address.
#[inline(always)]
pub fn is_martian_destination(dst_be: u32, gateway_ip_be: u32) -> bool {
    // The first octet is the first byte on the wire, whatever the host order.
    let first_octet = dst_be.to_ne_bytes()[0];
    first_octet == 0 || first_octet == 127 || first_octet >= 224 || dst_be == gateway_ip_be
}

/// Whether `dst` is an IPv6 address the gateway must never NAT a client's
/// packet to, whatever `--exclude-cidr` says; the IPv6 counterparts of
/// [`is_martian_destination`]'s:
///
/// - `::/128` (unspecified) and `::1/128` (loopback);
/// - `::ffff:0:0/96` (IPv4-mapped): the gateway's stack would treat it as
///   IPv4, outside every IPv4 rule;
/// - `fe80::/10` (link-local): the gateway's own link, the node's and its
///   other pods', not the internet;
/// - `ff00::/8` (multicast): one client's packet would go to many;
/// - the gateway's own IPv6 address.
#[inline(always)]
pub fn is_martian_destination_v6(dst: &[u8; 16], gateway_ip6: &[u8; 16]) -> bool {
    let word = |at: usize| u32::from_be_bytes([dst[at], dst[at + 1], dst[at + 2], dst[at + 3]]);
    let head_zero = word(0) == 0 && word(4) == 0;
    let unspecified_or_loopback = head_zero && word(8) == 0 && word(12) <= 1;
    let ipv4_mapped = head_zero && word(8) == 0x0000_ffff;
    let link_local = dst[0] == 0xfe && dst[1] & 0xc0 == 0x80;
    let multicast = dst[0] == 0xff;
    unspecified_or_loopback || ipv4_mapped || link_local || multicast || dst == gateway_ip6
}

/// The IPv4 address (as the wire holds it) an address of the NAT64
/// well-known prefix `64:ff9b::/96` (RFC 6052) stands for, else None. A
/// NAT64 on the way would deliver it to that IPv4 address: the IPv4 rules
/// (martians, `--exclude-cidr`) apply to it, or the IPv6 path would go
/// around them.
#[inline(always)]
pub fn nat64_embedded_ipv4(dst: &[u8; 16]) -> Option<u32> {
    let prefix = [0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0];
    let mut i = 0;
    while i < prefix.len() {
        if dst[i] != prefix[i] {
            return None;
        }
        i += 1;
    }
    Some(u32::from_ne_bytes([dst[12], dst[13], dst[14], dst[15]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nat64_address_stands_for_its_embedded_ipv4() {
        let nat64: core::net::Ipv6Addr = "64:ff9b::10.96.0.10".parse().unwrap();
        assert_eq!(nat64_embedded_ipv4(&nat64.octets()), Some(be(10, 96, 0, 10)));
        for other in ["64:ff9b:1::a60:a", "2001:db8::a60:a", "::ffff:10.96.0.10"] {
            let other: core::net::Ipv6Addr = other.parse().unwrap();
            assert_eq!(nat64_embedded_ipv4(&other.octets()), None, "{other}");
        }
    }

    fn be(a: u8, b: u8, c: u8, d: u8) -> u32 {
        u32::from_ne_bytes([a, b, c, d])
    }

    #[test]
    fn martians_and_the_gateway_itself_are_never_natted() {
        let gateway = be(10, 244, 2, 10);
        for martian in [
            be(0, 0, 0, 0),
            be(0, 1, 2, 3),
            be(127, 0, 0, 1),
            be(127, 255, 255, 255),
            be(224, 0, 0, 251),
            be(239, 255, 255, 250),
            be(240, 0, 0, 1),
            be(255, 255, 255, 255),
            gateway,
        ] {
            assert!(is_martian_destination(martian, gateway), "{:?}", martian.to_ne_bytes());
        }
        for fine in [be(1, 1, 1, 1), be(126, 255, 255, 255), be(128, 0, 0, 1), be(223, 255, 255, 255)] {
            assert!(!is_martian_destination(fine, gateway), "{:?}", fine.to_ne_bytes());
        }
    }

    #[test]
    fn ipv6_martians_and_the_gateway_itself_are_never_natted() {
        let v6 = |text: &str| text.parse::<core::net::Ipv6Addr>().unwrap().octets();
        let gateway = v6("2001:db8:ffff::10");
        for martian in ["::", "::1", "::ffff:1.1.1.1", "fe80::1", "febf::1", "ff02::1", "ff0e::fb"] {
            assert!(is_martian_destination_v6(&v6(martian), &gateway), "{martian}");
        }
        assert!(is_martian_destination_v6(&gateway, &gateway));
        for fine in
            ["2606:4700::1111", "::2", "::1.1.1.1", "64:ff9b::1.1.1.1", "fec0::1", "fd00::1", "fe00::1"]
        {
            assert!(!is_martian_destination_v6(&v6(fine), &gateway), "{fine}");
        }
    }

    #[test]
    fn icmpv6_errors_are_told_from_informational_messages() {
        for error in [ICMPV6_DEST_UNREACHABLE, ICMPV6_PACKET_TOO_BIG, ICMPV6_TIME_EXCEEDED, 127] {
            assert!(is_icmpv6_error(error));
        }
        for informational in [ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY, 133, 135, 255] {
            assert!(!is_icmpv6_error(informational));
        }
    }

    #[test]
    fn icmp_errors_are_told_from_queries() {
        for error in [3, 4, 5, 11, 12] {
            assert!(is_icmp_error(error));
        }
        for query in [0, 8, 13, 14, 42] {
            assert!(!is_icmp_error(query));
        }
    }
}
