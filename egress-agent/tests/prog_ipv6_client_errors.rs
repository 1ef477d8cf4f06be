//! A client's ICMPv6 errors about replies of its flows (its socket closed:
//! port unreachable) go to the remote as Linux's NAT sends them: from the
//! gateway's IPv6 address, the quote's destination and port the gateway's
//! and the flow's NAT port, every checksum right (verified with our own
//! code). A tenant cannot make the gateway send an error about what is
//! not its own.
mod common;

use common::*;
use egress_common::config::TUNNEL_GATEWAY_MAC;
use etherparse::{Icmpv6Type, PacketBuilder};

const ETH_HLEN: usize = 14;

/// Opens the client's flow `l4` from `client` (its tunnel) as `source`,
/// and returns its NAT port.
fn open(h: &mut Harness, client: std::net::Ipv4Addr, source: std::net::Ipv6Addr, l4: L4) -> u16 {
    let out = h.run(&from_client6_at(client, source, l4, b"ask"));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    ports(&ipv6_at(&out.packet, ETH_HLEN).l4).0
}

/// A reply from `remote` to `to` as a pod got it: IPv6 and `l4`.
fn reply_as_received(remote: std::net::Ipv6Addr, to: std::net::Ipv6Addr, l4: L4, payload: &[u8]) -> Vec<u8> {
    let frame = frame6(NODE_MAC, GATEWAY_MAC, remote, to, 50, l4, payload);
    frame[ETH_HLEN..].to_vec()
}

/// The ICMPv6 error of `icmp_type`/`code` that `source` sends to `to`
/// through client `client`'s tunnel, quoting `quoted`.
fn client_error(
    client: std::net::Ipv4Addr,
    source: std::net::Ipv6Addr,
    to: std::net::Ipv6Addr,
    (icmp_type, code): (u8, u8),
    quoted: &[u8],
) -> Vec<u8> {
    let mut inner = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, TUNNEL_GATEWAY_MAC)
        .ipv6(source.octets(), to.octets(), 64)
        .icmpv6(Icmpv6Type::Unknown { type_u8: icmp_type, code_u8: code, bytes5to8: [0; 4] })
        .write(&mut inner, quoted)
        .unwrap();
    tunnel(client, VNI, &inner)
}

const PORT_UNREACHABLE: (u8, u8) = (1, 4);

/// The pod's port unreachable about a UDP reply reaches the remote about
/// the packet the remote sent: to the gateway's address and NAT port.
#[test]
fn a_client_s_port_unreachable_reaches_the_remote_translated() {
    let mut h = Harness::default();
    let nat_port = open(&mut h, CLIENT_IP, CLIENT_IP6, L4::Udp { src: 40_002, dst: 53 });
    let reply = reply_as_received(REMOTE_IP6, CLIENT_IP6, L4::Udp { src: 53, dst: 40_002 }, b"late answer");
    let out = h.run(&client_error(CLIENT_IP, CLIENT_IP6, REMOTE_IP6, PORT_UNREACHABLE, &reply));
    assert_eq!(out.action, TC_ACT_REDIRECT, "sent to the remote");
    assert_eq!(&out.packet[12..14], &[0x86, 0xdd], "out of the tunnel, IPv6");
    let error = ipv6_at(&out.packet, ETH_HLEN); // the ICMPv6 checksum verified
    assert_eq!(
        (error.src, error.dst, error.hop_limit),
        (GATEWAY_IP6, REMOTE_IP6, 63),
        "from the gateway, one hop"
    );
    assert_eq!(&error.l4[..2], &[1, 4], "port unreachable");
    let quote = ipv6_at(&error.l4, 8); // whole: the quoted UDP checksum verified too
    assert_eq!((quote.src, quote.dst), (REMOTE_IP6, GATEWAY_IP6), "the packet the remote sent");
    assert_eq!(ports(&quote.l4), (53, nat_port));
    assert_eq!(&quote.l4[8..], b"late answer");
    assert_eq!(h.counter("icmp_error_to_remote"), 1);
    assert_eq!(h.counter("forwarded_to_remote"), 2);
}

/// A quote cut short of the TCP checksum: its address and port are
/// translated all the same, the ICMPv6 checksum still right.
#[test]
fn a_quote_cut_short_is_translated_too() {
    let mut h = Harness::default();
    let nat_port = open(&mut h, CLIENT_IP, CLIENT_IP6, tcp_syn(40_000, 443));
    let syn_ack = L4::Tcp { src: 443, dst: 40_000, syn: true, ack: true, fin: false, rst: false };
    let reply = reply_as_received(REMOTE_IP6, CLIENT_IP6, syn_ack, b"");
    let out = h.run(&client_error(CLIENT_IP, CLIENT_IP6, REMOTE_IP6, PORT_UNREACHABLE, &reply[..48]));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let error = ipv6_at(&out.packet, ETH_HLEN);
    let quote = &error.l4[8..];
    assert_eq!(&quote[24..40], &GATEWAY_IP6.octets(), "the quote's destination");
    assert_eq!(ports(&quote[40..]), (443, nat_port));
}

/// The first fragment of `ip` (an IPv6 packet without extension headers):
/// `len` bytes of its message (a multiple of 8), more to follow.
fn first_fragment(ip: &[u8], len: usize) -> Vec<u8> {
    let mut fragment = ip[..40].to_vec();
    fragment[4..6].copy_from_slice(&((8 + len) as u16).to_be_bytes());
    fragment[6] = 44;
    fragment.extend_from_slice(&[ip[6], 0, 0, 1]); // offset 0, more fragments
    fragment.extend_from_slice(&0x5eed_f00du32.to_be_bytes());
    fragment.extend_from_slice(&ip[40..40 + len]);
    fragment
}

/// The pod's stack gives up reassembling a remote's fragmented reply and
/// says so with time exceeded (code 1) quoting the first fragment: the
/// remote gets it about the fragment it sent, to the gateway's address and
/// NAT port, the quoted UDP checksum (the whole datagram's) right.
#[test]
fn a_client_s_error_about_a_reply_s_first_fragment_reaches_the_remote() {
    let mut h = Harness::default();
    let nat_port = open(&mut h, CLIENT_IP, CLIENT_IP6, L4::Udp { src: 40_004, dst: 53 });
    let payload: Vec<u8> = (0..2000u32).map(|i| (i * 7 % 251) as u8).collect();
    let received = reply_as_received(REMOTE_IP6, CLIENT_IP6, L4::Udp { src: 53, dst: 40_004 }, &payload);
    let sent = reply_as_received(REMOTE_IP6, GATEWAY_IP6, L4::Udp { src: 53, dst: nat_port }, &payload);
    let reassembly_time_exceeded = (3, 1);
    let quoted = first_fragment(&received, 1000);
    let out = h.run(&client_error(CLIENT_IP, CLIENT_IP6, REMOTE_IP6, reassembly_time_exceeded, &quoted));
    assert_eq!(out.action, TC_ACT_REDIRECT, "sent to the remote");
    let error = ipv6_at(&out.packet, ETH_HLEN); // the ICMPv6 checksum verified
    assert_eq!((error.src, error.dst), (GATEWAY_IP6, REMOTE_IP6));
    assert_eq!(&error.l4[..2], &[3, 1]);
    assert!(
        error.l4[8..] == first_fragment(&sent, 1000)[..],
        "the quote is the remote's own first fragment: address, port and UDP checksum"
    );
    assert_eq!(h.counter("icmp_error_to_remote"), 1);
}

/// What a tenant might send to make the gateway speak for others: an error
/// about another client's flow, about a flow no one has, quoting a packet
/// from another remote than the error goes to, or sent as another pod's
/// address. None leaves; an undefined error type is not translated.
#[test]
fn errors_about_what_is_not_the_client_s_own_go_nowhere() {
    let mut h = Harness::default();
    let udp = L4::Udp { src: 40_002, dst: 53 };
    open(&mut h, CLIENT_IP, CLIENT_IP6, udp);
    open(&mut h, SECOND_CLIENT_IP, SECOND_CLIENT_IP6, udp);
    let reply = L4::Udp { src: 53, dst: 40_002 };
    let other_remote = "2001:db8::53".parse().unwrap();
    let cases = [
        // The second client's reply, quoted by the first.
        (
            client_error(
                CLIENT_IP,
                CLIENT_IP6,
                REMOTE_IP6,
                PORT_UNREACHABLE,
                &reply_as_received(REMOTE_IP6, SECOND_CLIENT_IP6, reply, b"x"),
            ),
            "drop_no_mapping",
        ),
        // A port no flow has.
        (
            client_error(
                CLIENT_IP,
                CLIENT_IP6,
                REMOTE_IP6,
                PORT_UNREACHABLE,
                &reply_as_received(REMOTE_IP6, CLIENT_IP6, L4::Udp { src: 53, dst: 40_009 }, b"x"),
            ),
            "drop_no_mapping",
        ),
        // An error to one remote about another's packet.
        (
            client_error(
                CLIENT_IP,
                CLIENT_IP6,
                other_remote,
                PORT_UNREACHABLE,
                &reply_as_received(REMOTE_IP6, CLIENT_IP6, reply, b"x"),
            ),
            "drop_no_mapping",
        ),
        // Sent as the second client's address, through the first's tunnel.
        (
            client_error(
                CLIENT_IP,
                SECOND_CLIENT_IP6,
                REMOTE_IP6,
                PORT_UNREACHABLE,
                &reply_as_received(REMOTE_IP6, SECOND_CLIENT_IP6, reply, b"x"),
            ),
            "drop_spoofed_inner_source",
        ),
        // No quote at all, and none within the error's own length (the
        // frame carries one after it).
        (client_error(CLIENT_IP, CLIENT_IP6, REMOTE_IP6, PORT_UNREACHABLE, &[]), "drop_malformed"),
        (short_error_with_a_quote_behind(), "drop_malformed"),
        // Packet Too Big about its own flow's reply: a pod never needs one,
        // and it would lower the path MTU every tenant shares.
        (
            client_error(
                CLIENT_IP,
                CLIENT_IP6,
                REMOTE_IP6,
                (2, 0),
                &reply_as_received(REMOTE_IP6, CLIENT_IP6, reply, b"x"),
            ),
            "drop_ipv6_not_translated",
        ),
        // An error type RFC 4443 does not define.
        (
            client_error(
                CLIENT_IP,
                CLIENT_IP6,
                REMOTE_IP6,
                (100, 0),
                &reply_as_received(REMOTE_IP6, CLIENT_IP6, reply, b"x"),
            ),
            "drop_ipv6_not_translated",
        ),
    ];
    for (packet, counter) in cases {
        let before = h.counter(counter);
        assert_eq!(h.run(&packet).action, TC_ACT_SHOT, "{counter}");
        assert_eq!(h.counter(counter), before + 1, "{counter}");
    }
    assert_eq!(h.counter("icmp_error_to_remote"), 0);
    assert_eq!(h.counter("forwarded_to_remote"), 2, "the two flows' first packets only");
}

/// A port unreachable whose IPv6 length says 8 bytes (no quote), with a
/// quote of the client's own flow behind it in the frame.
fn short_error_with_a_quote_behind() -> Vec<u8> {
    let quoted = reply_as_received(REMOTE_IP6, CLIENT_IP6, L4::Udp { src: 53, dst: 40_002 }, b"x");
    let mut packet = client_error(CLIENT_IP, CLIENT_IP6, REMOTE_IP6, PORT_UNREACHABLE, &quoted);
    // Outer Ethernet, IPv4, UDP, VXLAN, inner Ethernet; then the IPv6
    // payload length.
    let payload_len_off = ETH_HLEN + 20 + 8 + 8 + 14 + 4;
    packet[payload_len_off..payload_len_off + 2].copy_from_slice(&8u16.to_be_bytes());
    packet
}
