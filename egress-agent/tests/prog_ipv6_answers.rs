//! The gateway's own ICMPv6 errors, as an IPv6 router sends them: time
//! exceeded to a client whose packet's hop limit ends here (traceroute6,
//! tracepath -6, however long its probes), and Packet Too Big to a remote whose reply the tunnel
//! cannot carry (IPv6 routers never fragment: path MTU discovery depends on
//! it). Every checksum, the quote's included, is verified with our own
//! code (`ipv6_at`).
mod common;

use std::{thread, time::Duration};

use common::*;
use egress_common::{
    config::{GatewayConfig, TUNNEL_GATEWAY_MAC},
    ip::IPPROTO_ICMPV6,
};

const ETH_HLEN: usize = 14;
/// Outer IPv4 (20), UDP (8), VXLAN (8), inner Ethernet (14).
const TUNNEL_LEN: usize = 50;
const INNER_IP_OFF: usize = ETH_HLEN + TUNNEL_LEN;
const IPV6_HLEN: usize = 40;
/// The most of a packet an ICMPv6 error quotes: the error then fits IPv6's
/// minimum MTU, 1,280 bytes.
const MAX_QUOTE: usize = 1280 - IPV6_HLEN - 8;

/// The client's inner frame to the remote with `hop_limit`.
fn expiring(hop_limit: u8, l4: L4, payload: &[u8]) -> Vec<u8> {
    frame6(CLIENT_MAC, TUNNEL_GATEWAY_MAC, CLIENT_IP6, REMOTE_IP6, hop_limit, l4, payload)
}

/// Checks the time-exceeded answer to the client's `frame` that `out`
/// carries back through the tunnel, and returns its ICMPv6 message.
fn time_exceeded_in(out: &Outcome, frame: &[u8]) -> Vec<u8> {
    assert_eq!(out.action, TC_ACT_REDIRECT, "answered");
    let outer = ipv4_fields_at(&out.packet, ETH_HLEN);
    assert_eq!((outer.src, outer.dst, outer.protocol), (GATEWAY_IP, CLIENT_IP, 17), "to the worker");
    assert_eq!(ports(&outer.payload), (VXLAN_PORT, VXLAN_PORT));
    let inner_eth = &out.packet[ETH_HLEN + 36..INNER_IP_OFF];
    assert_eq!(&inner_eth[0..6], &CLIENT_MAC, "to the worker's tunnel device");
    assert_eq!(&inner_eth[6..12], &TUNNEL_GATEWAY_MAC, "from the tunnel's gateway");
    assert_eq!(&inner_eth[12..14], &[0x86, 0xdd], "IPv6 inside");
    let answer = ipv6_at(&out.packet, INNER_IP_OFF);
    assert_eq!((answer.src, answer.dst), (GATEWAY_IP6, CLIENT_IP6), "from the gateway, as a hop");
    assert_eq!((answer.next_header, answer.hop_limit), (IPPROTO_ICMPV6, 64));
    let icmp = answer.l4;
    assert_eq!((icmp[0], icmp[1], &icmp[4..8]), (3, 0, &[0u8; 4][..]), "hop limit exceeded in transit");
    assert!(icmp[8..] == frame[ETH_HLEN..], "the quote is the whole expired packet as it came");
    icmp
}

/// A client's packet whose hop limit ends at the gateway draws time
/// exceeded, quoting it whole; nothing goes out and no flow is made.
#[test]
fn an_expiring_packet_is_answered_with_time_exceeded() {
    let mut h = Harness::default();
    let probes = [
        (1, L4::Udp { src: 33_434, dst: 33_435 }, &b"traceroute6"[..]),
        (0, tcp_syn(40_000, 443), &b""[..]),
        (1, L4::EchoRequest { id: 7 }, &b"ping -6 -t 1"[..]),
        // An odd length: the checksum's last byte.
        (1, L4::Udp { src: 33_436, dst: 33_437 }, &[7u8; 33][..]),
        // The longest packet whose answer fits 1,280 bytes.
        (1, L4::Udp { src: 33_438, dst: 33_439 }, &[9u8; MAX_QUOTE - IPV6_HLEN - 8][..]),
    ];
    for (answered, (hop_limit, l4, payload)) in probes.into_iter().enumerate() {
        let frame = expiring(hop_limit, l4, payload);
        let out = h.run(&tunnel(CLIENT_IP, VNI, &frame));
        time_exceeded_in(&out, &frame);
        assert_eq!(h.counter("drop_ttl_exceeded"), answered as u64 + 1, "the packet itself goes no further");
        assert_eq!(h.counter("icmp_error_to_client"), answered as u64 + 1);
    }
    assert_eq!(h.counter("forwarded_to_remote"), 0);
    assert!(h.flows6().is_empty(), "no flow for an expired packet");
}

/// A packet longer than an answer may quote (tracepath's probes are as
/// long as the path MTU) is answered all the same, its head quoted: the
/// answer fills IPv6's minimum MTU and no more.
#[test]
fn an_expiring_packet_too_long_to_quote_whole_is_quoted_in_part() {
    let mut h = Harness::default();
    for ip_len in [MAX_QUOTE + 1, MAX_QUOTE + 48, MAX_QUOTE + 49, 1450] {
        let frame = expiring(1, L4::Udp { src: 33_434, dst: 33_435 }, &vec![7; ip_len - IPV6_HLEN - 8]);
        let out = h.run(&tunnel(CLIENT_IP, VNI, &frame));
        assert_eq!(out.action, TC_ACT_REDIRECT, "a {ip_len}-byte packet is answered");
        assert_eq!(out.packet.len(), INNER_IP_OFF + 1280, "the answer is 1,280 bytes");
        let answer = ipv6_at(&out.packet, INNER_IP_OFF);
        assert_eq!((answer.src, answer.dst), (GATEWAY_IP6, CLIENT_IP6));
        let icmp = &answer.l4;
        assert_eq!((icmp[0], icmp[1]), (3, 0));
        assert!(
            icmp[8..] == frame[ETH_HLEN..ETH_HLEN + MAX_QUOTE],
            "a {ip_len}-byte packet's head is the quote"
        );
        let outer = ipv4_fields_at(&out.packet, ETH_HLEN);
        assert_eq!((outer.src, outer.dst), (GATEWAY_IP, CLIENT_IP), "back through the tunnel");
        assert_eq!(&out.packet[ETH_HLEN + 36..ETH_HLEN + 42], &CLIENT_MAC);
    }
    assert_eq!(h.counter("icmp_error_to_client"), 4);
}

/// What a router never answers: an ICMPv6 error (two routers could answer
/// each other forever), a Redirect. Only dropped, and it takes no answer from the
/// client's allowance.
#[test]
fn an_expiring_error_is_only_dropped() {
    let mut h = Harness::default();
    let mut error = expiring(1, L4::EchoRequest { id: 7 }, b"quoted");
    error[ETH_HLEN + IPV6_HLEN] = 1; // destination unreachable
    let mut redirect = error.clone();
    redirect[ETH_HLEN + IPV6_HLEN] = 137; // nor a Redirect (RFC 4443 2.4 (e.2))
    for frame in [error, redirect] {
        assert_eq!(h.run(&tunnel(CLIENT_IP, VNI, &frame)).action, TC_ACT_SHOT);
    }
    assert_eq!(h.counter("drop_ttl_exceeded"), 2);
    assert_eq!(h.counter("icmp_error_to_client"), 0);
    assert_eq!(h.counter("icmp_answer_rate_limited"), 0, "it took no answer");
}

/// A client spraying expiring packets cannot make the gateway a traffic
/// generator: 6 answers at once, then 1 a second, out of the same
/// allowance as its IPv4 answers; another client's is its own.
#[test]
fn time_exceeded_answers_are_limited_per_client() {
    let mut h = Harness::default();
    let frame = expiring(1, L4::Udp { src: 33_434, dst: 33_435 }, b"spray");
    let spray = tunnel(CLIENT_IP, VNI, &frame);
    let ipv4_probe =
        tunnel(CLIENT_IP, VNI, &frame_v4_expiring(CLIENT_IP, L4::Udp { src: 33_434, dst: 33_435 }));
    assert_eq!(h.run(&ipv4_probe).action, TC_ACT_REDIRECT, "an IPv4 answer first");
    for answer in 2..=6 {
        assert_eq!(h.run(&spray).action, TC_ACT_REDIRECT, "answer {answer}");
    }
    assert_eq!(h.run(&spray).action, TC_ACT_SHOT, "a 7th answer at once");
    assert_eq!(h.counter("icmp_answer_rate_limited"), 1);

    // The second client sends as its own addresses, through its tunnel.
    let second = frame6(
        CLIENT_MAC,
        TUNNEL_GATEWAY_MAC,
        SECOND_CLIENT_IP6,
        REMOTE_IP6,
        1,
        L4::EchoRequest { id: 1 },
        b"",
    );
    let out = h.run(&tunnel(SECOND_CLIENT_IP, VNI, &second));
    assert_eq!(out.action, TC_ACT_REDIRECT, "another client's answer");
    assert_eq!(ipv6_at(&out.packet, INNER_IP_OFF).dst, SECOND_CLIENT_IP6);

    thread::sleep(Duration::from_millis(1_100));
    assert_eq!(h.run(&spray).action, TC_ACT_REDIRECT, "one more a second later");
    assert_eq!(h.run(&spray).action, TC_ACT_SHOT);
    assert_eq!(h.counter("icmp_answer_rate_limited"), 2);
}

fn frame_v4_expiring(src: std::net::Ipv4Addr, l4: L4) -> Vec<u8> {
    frame(CLIENT_MAC, TUNNEL_GATEWAY_MAC, src, REMOTE_IP, 1, l4, b"v4")
}

/// Opens the client's UDP flow to the remote's port 53 and returns its
/// NAT port.
fn open_dns(h: &mut Harness) -> u16 {
    let out = h.run(&from_client6(L4::Udp { src: 40_002, dst: 53 }, b"query"));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    ports(&ipv6_at(&out.packet, ETH_HLEN).l4).0
}

/// The remote's reply of `ip_len` bytes (IPv6 header included).
fn reply_of_len(nat_port: u16, ip_len: usize) -> Vec<u8> {
    from_remote6(L4::Udp { src: 53, dst: nat_port }, &vec![5; ip_len - IPV6_HLEN - 8])
}

/// A reply the tunnel cannot carry draws Packet Too Big with the tunnel's
/// MTU, quoting the reply as it arrived; one that fits goes through.
#[test]
fn a_reply_too_big_for_the_tunnel_is_answered_with_packet_too_big() {
    let mut h = Harness::default();
    let nat_port = open_dns(&mut h);
    let tunnel_mtu = 1500 - TUNNEL_LEN;
    let fits = h.run(&reply_of_len(nat_port, tunnel_mtu));
    assert_eq!(fits.action, TC_ACT_REDIRECT, "a reply that just fits");
    assert_eq!(h.counter("forwarded_to_client"), 1);

    // One byte more, and a reply the size of eth0's MTU, as the remote
    // sends before it knows.
    for (answered, ip_len) in [tunnel_mtu + 1, 1500].into_iter().enumerate() {
        let too_big = reply_of_len(nat_port, ip_len);
        let out = h.run(&too_big);
        assert_eq!(out.action, TC_ACT_REDIRECT, "a {ip_len}-byte reply is answered");
        assert_eq!(out.packet.len(), ETH_HLEN + 1280, "the answer fills IPv6's minimum MTU");
        let answer = ipv6_at(&out.packet, ETH_HLEN);
        assert_eq!((answer.src, answer.dst), (GATEWAY_IP6, REMOTE_IP6));
        assert_eq!((answer.next_header, answer.hop_limit), (IPPROTO_ICMPV6, 64));
        let icmp = &answer.l4;
        assert_eq!((icmp[0], icmp[1]), (2, 0), "Packet Too Big");
        let mtu = u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]) as usize;
        assert_eq!(mtu, tunnel_mtu, "the tunnel's MTU for IPv6");
        // The remote must recognise its own packet: the quote is the reply
        // as it arrived, to the gateway's address and NAT port.
        let quote = &icmp[8..];
        assert_eq!(quote.len(), MAX_QUOTE);
        assert!(quote == &too_big[ETH_HLEN..ETH_HLEN + MAX_QUOTE], "a {ip_len}-byte reply's quote differs");
        assert_eq!(ports(&quote[IPV6_HLEN..]), (53, nat_port));
        assert_eq!(h.counter("icmp_too_big_to_remote"), answered as u64 + 1);
        assert_eq!(h.counter("drop_too_big_for_tunnel"), answered as u64 + 1);
    }
    assert_eq!(h.counter("forwarded_to_client"), 1, "nothing too big reached the client");

    // A reply whose hop limit ends here goes no further, unanswered.
    let mut expiring = reply_of_len(nat_port, 100);
    expiring[ETH_HLEN + 7] = 1;
    assert_eq!(h.run(&expiring).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_ttl_exceeded"), 1);
}

/// A remote (or a tenant steering one) sending big replies in a burst
/// draws 6 answers at once, then 1 a second, out of the binding's
/// client's allowance: another client's remotes are answered all the same.
/// Too big replies to a NAT port with no flow draw nothing.
#[test]
fn packet_too_big_answers_are_limited_per_client() {
    let mut h = Harness::default();
    let nat_port = open_dns(&mut h);
    let second = from_client6_at(SECOND_CLIENT_IP, SECOND_CLIENT_IP6, L4::Udp { src: 40_002, dst: 53 }, b"q");
    let out = h.run(&second);
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let second_nat_port = ports(&ipv6_at(&out.packet, ETH_HLEN).l4).0;

    let too_big = reply_of_len(nat_port, 1500);
    for answer in 1..=6 {
        assert_eq!(h.run(&too_big).action, TC_ACT_REDIRECT, "answer {answer}");
    }
    assert_eq!(h.run(&too_big).action, TC_ACT_SHOT, "a 7th answer at once");
    assert_eq!(h.counter("icmp_too_big_to_remote"), 6);
    assert_eq!(h.counter("icmp_answer_rate_limited"), 1);
    assert_eq!(h.counter("drop_too_big_for_tunnel"), 7);
    assert_eq!(h.run(&reply_of_len(second_nat_port, 1500)).action, TC_ACT_REDIRECT, "the other client's");

    // Its neighbour in the (even-started, odd-ended) NAT range.
    let unbound = if nat_port.is_multiple_of(2) { nat_port + 1 } else { nat_port - 1 };
    assert_ne!(unbound, second_nat_port, "a port no flow has");
    assert_eq!(h.run(&reply_of_len(unbound, 1500)).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_no_mapping"), 1);
    assert_eq!(h.counter("icmp_too_big_to_remote"), 7);

    thread::sleep(Duration::from_millis(1_100));
    assert_eq!(h.run(&too_big).action, TC_ACT_REDIRECT, "answered a second later");
    assert_eq!(h.run(&too_big).action, TC_ACT_SHOT);
    assert_eq!(h.counter("icmp_too_big_to_remote"), 8);
}

/// Below IPv6's minimum MTU the tunnel cannot carry IPv6 as it must, and
/// an answer with an MTU under 1,280 would be ignored: only dropped.
#[test]
fn a_tunnel_under_ipv6_minimum_mtu_draws_no_answer() {
    let cfg = GatewayConfig { mtu: 1280 + TUNNEL_LEN as u32 - 1, ..config((20_000, 20_099)) };
    let mut h = Harness::with_config(&cfg, 4096);
    let nat_port = open_dns(&mut h);
    assert_eq!(h.run(&reply_of_len(nat_port, 1280)).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_too_big_for_tunnel"), 1);
    assert_eq!(h.counter("icmp_too_big_to_remote"), 0);
}
