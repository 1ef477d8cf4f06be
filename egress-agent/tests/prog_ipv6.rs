//! A labeled pod's IPv6 packets in its IPv4 tunnel (a dual-stack cluster),
//! handed to `egress_gateway6` by a tail call: what it drops before any
//! binding, each for its reason, and that nothing it drops leaves or
//! makes a flow. What it translates: `prog_ipv6_snat.rs`.
mod common;

use std::net::Ipv6Addr;

use common::*;
use egress_common::{
    config::{GatewayConfig, TUNNEL_GATEWAY_MAC},
    ip::IPPROTO_ICMPV6,
};

const ETH_HLEN: usize = 14;

fn v6(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

/// An inner Ethernet + IPv6 frame from `src` to `dst` with `hop_limit`.
fn frame6_from(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, l4: L4) -> Vec<u8> {
    frame6(CLIENT_MAC, TUNNEL_GATEWAY_MAC, src, dst, hop_limit, l4, b"data")
}

/// The listed client's frame to `dst`.
fn to(dst: Ipv6Addr, l4: L4) -> Vec<u8> {
    frame6_from(CLIENT_IP6, dst, 64, l4)
}

/// An inner Ethernet + IPv6 frame from the client with `next_header` and
/// `payload` as given, its payload length `claimed` (or the true one).
fn raw_frame6(next_header: u8, payload: &[u8], claimed: Option<u16>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&TUNNEL_GATEWAY_MAC);
    out.extend_from_slice(&CLIENT_MAC);
    out.extend_from_slice(&0x86ddu16.to_be_bytes());
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&claimed.unwrap_or(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&[next_header, 64]);
    out.extend_from_slice(&CLIENT_IP6.octets());
    out.extend_from_slice(&REMOTE_IP6.octets());
    out.extend_from_slice(payload);
    out
}

/// An ICMPv6 message of `icmp_type` (checksum left zero: the checks under
/// test come before any checksum would be).
fn icmpv6(icmp_type: u8) -> Vec<u8> {
    raw_frame6(IPPROTO_ICMPV6, &[icmp_type, 0, 0, 0, 0, 0, 0, 0], None)
}

fn sent(h: &Harness) -> u64 {
    h.counter("forwarded_to_remote") + h.counter("forwarded_to_client") + h.counter("probe_answered")
}

/// `packet` is dropped, counted under `counter`, sends nothing and makes
/// no flow; and it reached the IPv6 program (no empty-slot fallback).
fn assert_dropped(h: &mut Harness, packet: &[u8], counter: &str) {
    let before = h.counter(counter);
    let out = h.run(packet);
    assert_eq!(out.action, TC_ACT_SHOT, "{counter}: dropped");
    assert_eq!(h.counter(counter), before + 1, "{counter}: counted");
    assert_eq!(sent(h), 0, "{counter}: nothing sent");
    assert!(h.flows().is_empty() && h.flows6().is_empty(), "{counter}: no flow made");
    assert_eq!(h.counter("drop_not_configured"), 0, "{counter}: the IPv6 program was in its slot");
}

#[test]
fn a_pod_may_send_ipv6_only_as_itself() {
    let mut h = Harness::default();
    // Another client's listed address, an unlisted one, the gateway's own
    // as a source: all carried in the first client's tunnel.
    for src in [SECOND_CLIENT_IP6, v6("fd00:10:244:1::99"), GATEWAY_IP6] {
        let frame = frame6_from(src, REMOTE_IP6, 64, L4::Udp { src: 40_000, dst: 53 });
        assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &frame), "drop_spoofed_inner_source");
    }
    // An address removed from the client's list is no longer its own.
    h.datapath.maps.remove_client6(CLIENT_IP6).unwrap();
    let frame = to(REMOTE_IP6, L4::Udp { src: 40_000, dst: 53 });
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &frame), "drop_spoofed_inner_source");
}

#[test]
fn destinations_never_natted_are_dropped_before_the_hop_limit() {
    let mut h = Harness::default();
    let udp = L4::Udp { src: 40_002, dst: 53 };
    // Martians and the gateway's own address, whatever the hop limit.
    for martian in ["::1", "::", "::ffff:10.0.0.1", "fe80::1", "ff02::1", "ff0e::1"] {
        assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &to(v6(martian), udp)), "drop_martian_destination");
    }
    let own = frame6_from(CLIENT_IP6, GATEWAY_IP6, 1, udp);
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &own), "drop_martian_destination");
    // An excluded range; a hop limit of 1 ends before the exclusion is
    // looked at (the time-exceeded answer goes first, as IPv4's).
    h.datapath.maps.add_excluded6(v6("2001:db8:1::"), 48).unwrap();
    let excluded = v6("2001:db8:1::53");
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &to(excluded, udp)), "drop_excluded_destination");
    let expiring = frame6_from(CLIENT_IP6, excluded, 1, udp);
    assert_eq!(h.run(&tunnel(CLIENT_IP, VNI, &expiring)).action, TC_ACT_REDIRECT, "answered as a hop");
    assert_eq!(h.counter("icmp_error_to_client"), 1);
    // The range the loader was given, as `--exclude-cidr fd00:96::/108`
    // gives it (the service range of a dual-stack cluster, say): its last
    // address excluded, the next one not.
    let (range, _) = EXCLUDED_CIDR6;
    let last = Ipv6Addr::from(u128::from(range) | 0xf_ffff);
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &to(last, udp)), "drop_excluded_destination");
    // Next to each range, outside it: not excluded.
    let outside = to(v6("2001:db8:2::53"), udp);
    assert_eq!(h.run(&tunnel(CLIENT_IP, VNI, &outside)).action, TC_ACT_REDIRECT);
    let next = Ipv6Addr::from(u128::from(range) + 0x10_0000);
    assert_eq!(h.run(&tunnel(CLIENT_IP, VNI, &to(next, udp))).action, TC_ACT_REDIRECT);
    assert_eq!(h.counter("forwarded_to_remote"), 2);
}

/// A NAT64 address (`64:ff9b::/96`) stands for its embedded IPv4 address:
/// a hostile pod must not reach through it what IPv4 refuses it.
#[test]
fn a_nat64_address_is_judged_by_the_ipv4_address_it_embeds() {
    let mut h = Harness::default();
    let udp = L4::Udp { src: 40_003, dst: 53 };
    let gateway = format!("64:ff9b::{GATEWAY_IP}");
    for martian in ["64:ff9b::127.0.0.1", "64:ff9b::224.0.0.251", "64:ff9b::0.0.0.0", &gateway] {
        assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &to(v6(martian), udp)), "drop_martian_destination");
    }
    // `--exclude-cidr 192.0.2.0/24` (EXCLUDED_CIDR), reached as NAT64.
    let excluded = to(v6("64:ff9b::192.0.2.53"), udp);
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &excluded), "drop_excluded_destination");
    // A public IPv4 address behind NAT64 leaves.
    let public = to(v6("64:ff9b::198.51.100.10"), udp);
    assert_eq!(h.run(&tunnel(CLIENT_IP, VNI, &public)).action, TC_ACT_REDIRECT);
}

#[test]
fn a_gateway_without_ipv6_drops_a_pod_s_ipv6_as_disabled() {
    let cfg = GatewayConfig { gateway_ip6: [0; 16], ..config((20_000, 20_099)) };
    let mut h = Harness::with_config(&cfg, 4096);
    let frame = to(REMOTE_IP6, tcp_syn(40_000, 443));
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &frame), "drop_ipv6_disabled");
    // Malformed packets are still that first.
    let truncated = &raw_frame6(17, &[0; 12], None)[..ETH_HLEN + 30];
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, truncated), "drop_malformed");
}

#[test]
fn hostile_ipv6_is_dropped_for_what_it_is() {
    let mut h = Harness::default();
    let udp = [0x9c, 0x41, 0x00, 0x35, 0x00, 0x0c, 0x12, 0x34, b'd', b'a', b't', b'a'];
    // Extension headers before the transport header: an 8-byte hop-by-hop
    // (next header UDP, PadN), and the others by their numbers alone. (A
    // fragment header is translated: prog_ipv6_fragments.rs; these same
    // bytes under one read as a later fragment nothing began.)
    let mut hop_by_hop = vec![17, 0, 1, 4, 0, 0, 0, 0];
    hop_by_hop.extend_from_slice(&udp);
    assert_dropped(
        &mut h,
        &tunnel(CLIENT_IP, VNI, &raw_frame6(0, &hop_by_hop, None)),
        "drop_ipv6_ext_header",
    );
    for next_header in [43, 60] {
        let frame = raw_frame6(next_header, &hop_by_hop, None);
        assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &frame), "drop_ipv6_ext_header");
    }
    let frame = raw_frame6(44, &hop_by_hop, None);
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &frame), "drop_fragment_unmatched");
    // A payload length that claims more than arrived, or a version that
    // is not 6 under the IPv6 ethertype.
    for claimed in [udp.len() as u16 + 1, 1400] {
        let lying = raw_frame6(17, &udp, Some(claimed));
        assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &lying), "drop_malformed");
    }
    let mut version4 = raw_frame6(17, &udp, None);
    version4[ETH_HLEN] = 0x45;
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &version4), "drop_malformed");
    let truncated = &raw_frame6(17, &udp, None)[..ETH_HLEN + 30];
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, truncated), "drop_malformed");
    // A UDP header cut short, and a zero UDP checksum (mandatory in IPv6).
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &raw_frame6(17, &udp[..6], None)), "drop_malformed");
    let mut unchecked = udp;
    unchecked[6..8].copy_from_slice(&[0, 0]);
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &raw_frame6(17, &unchecked, None)), "drop_malformed");
    // SCTP; an ICMPv6 echo reply as if in answer to nothing; neighbour and
    // router solicitations, which are the link's and never a remote's.
    assert_dropped(
        &mut h,
        &tunnel(CLIENT_IP, VNI, &raw_frame6(132, &udp, None)),
        "drop_unsupported_protocol",
    );
    let reply = to(REMOTE_IP6, L4::EchoReply { id: 9 });
    assert_eq!(reply[ETH_HLEN + 6], IPPROTO_ICMPV6);
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &reply), "drop_unsupported_protocol");
    for informational in [133, 135, 136] {
        assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &icmpv6(informational)), "drop_unsupported_protocol");
    }
    // A client's ICMPv6 errors are translated (`prog_ipv6_client_errors`):
    // one without a quote is malformed; Packet Too Big and a type RFC 4443
    // does not define are not translated.
    for error in [1, 3] {
        assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &icmpv6(error)), "drop_malformed");
    }
    for error in [2, 100] {
        assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI, &icmpv6(error)), "drop_ipv6_not_translated");
    }
}

#[test]
fn ipv6_from_outside_the_labeled_pods_never_reaches_the_ipv6_program() {
    let mut h = Harness::default();
    let frame = to(REMOTE_IP6, tcp_syn(40_000, 443));
    // The outer checks come first: an unlisted worker pod, another VNI.
    assert_dropped(&mut h, &tunnel(OTHER_POD_IP, VNI, &frame), "drop_unknown_client");
    assert_dropped(&mut h, &tunnel(CLIENT_IP, VNI + 1, &frame), "drop_bad_vni");
    assert_eq!(h.counter("drop_ipv6_not_translated"), 0);
}
