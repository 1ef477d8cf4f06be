//! A client whose tunnel is over IPv6 (a pod of an IPv6-only cluster,
//! which `join` tunnels from its own IPv6 address): its packets leave from
//! the gateway's IPv6 address as a dual-stack client's do, and everything
//! that goes back to it (replies, errors, the gateway's own answers) goes
//! in a 70-byte IPv6 tunnel, UDP checksum zero. The tunnel proves who
//! sent it: a listed address, carried inside too. Every inner checksum is
//! verified with our own code.
mod common;

use std::net::Ipv6Addr;

use common::*;
use egress_agent::{
    gateway::reconcile::ClientTable,
    pods::{ClientIdentity, ClientSnapshot},
};
use egress_common::{
    config::TUNNEL_GATEWAY_MAC,
    conntrack::{FLOW_OUTER_IPV6, FLOW_SEEN_REPLY},
};
use etherparse::{Icmpv6Type, PacketBuilder};

const ETH_HLEN: usize = 14;
const IPV6_HLEN: usize = 40;
/// Outer IPv6 (40), UDP (8), VXLAN (8), inner Ethernet (14).
const TUNNEL6_LEN: usize = 70;
const INNER_ETH_OFF: usize = ETH_HLEN + 56;
const INNER_IP_OFF: usize = ETH_HLEN + TUNNEL6_LEN;
/// A pod of an IPv6-only cluster: no IPv4, listed by its IPv6 address.
const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0x3, 0, 0, 0, 9);
const POD6_CLIENT_ID: u32 = 3;

/// Another pod of the IPv6-only cluster, listed too.
const OTHER_POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0x4, 0, 0, 0, 10);

/// The harness's gateway (whose two dual-stack clients tunnel over IPv4),
/// with `POD6` and `OTHER_POD6` listed by their IPv6 addresses.
fn harness() -> Harness {
    let mut h = Harness::default();
    h.datapath.maps.add_ipv6_client(POD6, POD6_CLIENT_ID).unwrap();
    h.datapath.maps.add_ipv6_client(OTHER_POD6, POD6_CLIENT_ID + 1).unwrap();
    h
}

/// `inner_frame` in VXLAN over IPv6 from `outer_src`:4789 to the
/// gateway's IPv6 address, as a worker's device with `udp6zerocsumtx`
/// sends it.
fn tunnel6(outer_src: Ipv6Addr, vni: u32, inner_frame: &[u8]) -> Vec<u8> {
    let mut vxlan_and_frame = vec![0x08, 0, 0, 0];
    vxlan_and_frame.extend_from_slice(&(vni << 8).to_be_bytes());
    vxlan_and_frame.extend_from_slice(inner_frame);
    let mut out = Vec::new();
    PacketBuilder::ethernet2(NODE_MAC, GATEWAY_MAC)
        .ipv6(outer_src.octets(), GATEWAY_IP6.octets(), 63)
        .udp(VXLAN_PORT, VXLAN_PORT)
        .write(&mut out, &vxlan_and_frame)
        .unwrap();
    out[ETH_HLEN + IPV6_HLEN + 6..ETH_HLEN + IPV6_HLEN + 8].copy_from_slice(&[0, 0]);
    out
}

/// `l4` from `source` to the remote, in `POD6`'s tunnel.
fn from_pod6_as(source: Ipv6Addr, l4: L4, payload: &[u8]) -> Vec<u8> {
    tunnel6(POD6, VNI, &frame6(CLIENT_MAC, TUNNEL_GATEWAY_MAC, source, REMOTE_IP6, 64, l4, payload))
}

fn from_pod6(l4: L4, payload: &[u8]) -> Vec<u8> {
    from_pod6_as(POD6, l4, payload)
}

/// Sends the pod's `packet` and returns what left, checked as it leaves:
/// the tunnel off, IPv6 from the gateway's address.
fn sent(h: &mut Harness, packet: &[u8]) -> Ipv6View {
    let out = h.run(packet);
    assert_eq!(out.action, TC_ACT_REDIRECT, "sent on");
    assert_eq!(out.packet.len(), packet.len() - TUNNEL6_LEN, "the 70-byte tunnel came off");
    assert_eq!(&out.packet[12..14], &[0x86, 0xdd]);
    let ip = ipv6_at(&out.packet, ETH_HLEN);
    assert_eq!(ip.src, GATEWAY_IP6, "from the gateway's IPv6 address");
    ip
}

/// The NAT port (or echo identifier) of what left.
fn nat_port_of(ip: &Ipv6View) -> u16 {
    if ip.next_header == 58 {
        icmp_id(&ip.l4)
    } else {
        ports(&ip.l4).0
    }
}

/// Checks the IPv6 tunnel `out` carries back to `POD6`, byte for byte,
/// and returns the inner IPv6 packet.
fn tunnelled6(out: &Outcome) -> Ipv6View {
    assert_eq!(out.action, TC_ACT_REDIRECT, "sent to the client");
    let p = &out.packet;
    assert_eq!(&p[12..14], &[0x86, 0xdd], "the outer header is IPv6");
    let outer = &p[ETH_HLEN..];
    assert_eq!(outer[0] >> 4, 6);
    assert_eq!(
        u32::from_be_bytes([outer[0], outer[1], outer[2], outer[3]]) & 0x000f_ffff,
        0,
        "no flow label"
    );
    let payload_len = u16::from_be_bytes([outer[4], outer[5]]) as usize;
    assert_eq!(payload_len, p.len() - ETH_HLEN - IPV6_HLEN, "the outer payload length");
    assert_eq!((outer[6], outer[7]), (17, 64), "UDP, hop limit 64");
    assert_eq!(&outer[8..24], &GATEWAY_IP6.octets(), "from the gateway's IPv6 address");
    assert_eq!(&outer[24..40], &POD6.octets(), "to the pod's own address");
    let udp = &outer[IPV6_HLEN..IPV6_HLEN + 8];
    assert_eq!(ports(udp), (VXLAN_PORT, VXLAN_PORT));
    assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, payload_len, "the UDP length");
    assert_eq!(&udp[6..8], &[0, 0], "a zero UDP checksum (RFC 6935)");
    let vxlan = &outer[IPV6_HLEN + 8..IPV6_HLEN + 16];
    assert_eq!(vxlan[0], 0x08, "VNI present");
    assert_eq!(u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]), VNI);
    let inner_eth = &p[INNER_ETH_OFF..INNER_IP_OFF];
    assert_eq!(&inner_eth[0..6], &CLIENT_MAC, "to the worker's tunnel device");
    assert_eq!(&inner_eth[6..12], &TUNNEL_GATEWAY_MAC);
    assert_eq!(&inner_eth[12..14], &[0x86, 0xdd]);
    let inner = ipv6_at(p, INNER_IP_OFF);
    let outer_class = (u16::from_be_bytes([outer[0], outer[1]]) >> 4) as u8;
    assert_eq!(outer_class, inner.traffic_class, "DSCP and ECN copied out (RFC 6040)");
    inner
}

/// The pod's TCP, UDP and echo leave as any client's IPv6 does, and the
/// binding knows the tunnel is over IPv6.
#[test]
fn an_ipv6_tunnel_s_packets_leave_from_the_gateway_s_ipv6_address() {
    let mut h = harness();
    let tcp = sent(&mut h, &from_pod6(tcp_syn(40_000, 443), b""));
    assert_eq!((tcp.dst, tcp.hop_limit), (REMOTE_IP6, 63), "one hop");
    assert_eq!(ports(&tcp.l4).1, 443);
    assert!((20_000..=20_099).contains(&ports(&tcp.l4).0), "a NAT port");
    let udp = sent(&mut h, &from_pod6(L4::Udp { src: 40_001, dst: 53 }, b"query"));
    assert_eq!(&udp.l4[8..], b"query");
    let echo = sent(&mut h, &from_pod6(L4::EchoRequest { id: 7 }, b"ping"));
    assert_eq!(echo.l4[0], 128);
    let flows = h.flows6();
    assert_eq!(flows.len(), 3);
    for flow in flows {
        assert_eq!(flow.client_ip, POD6.octets());
        assert_eq!(flow.client_id, POD6_CLIENT_ID);
        assert_eq!(flow.flags & FLOW_OUTER_IPV6, FLOW_OUTER_IPV6, "the tunnel is over IPv6");
        assert_eq!(flow.client_outer_ip_be, 0, "no outer IPv4");
    }
    assert_eq!(h.counter("forwarded_to_remote"), 3);
}

/// Replies go back in the same kind of tunnel, to the pod's own address;
/// a dual-stack client's replies from the same gateway keep their IPv4 one.
#[test]
fn replies_go_back_in_a_tunnel_over_ipv6() {
    let mut h = harness();
    let nat_port = nat_port_of(&sent(&mut h, &from_pod6(tcp_syn(40_000, 443), b"")));
    let syn_ack = L4::Tcp { src: 443, dst: nat_port, syn: true, ack: true, fin: false, rst: false };
    let mut reply = from_remote6(syn_ack, b"welcome");
    // Traffic class 0xba (DSCP 46, ECT(0)), which the outer header copies.
    reply[ETH_HLEN] = 0x6b;
    reply[ETH_HLEN + 1] = 0xa0;
    let inner = tunnelled6(&h.run(&reply));
    assert_eq!((inner.src, inner.dst, inner.hop_limit), (REMOTE_IP6, POD6, 49));
    assert_eq!(inner.traffic_class, 0xba);
    assert_eq!(ports(&inner.l4), (443, 40_000), "the pod's own port");
    assert_eq!(&inner.l4[20..], b"welcome");
    assert_ne!(h.flows6()[0].flags & FLOW_SEEN_REPLY, 0, "answered");
    assert_eq!(h.flows6()[0].flags & FLOW_OUTER_IPV6, FLOW_OUTER_IPV6, "still over IPv6");

    // A dual-stack client, same gateway, same remote.
    let out = h.run(&from_client6(L4::Udp { src: 40_001, dst: 53 }, b"q"));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let dual_port = ports(&ipv6_at(&out.packet, ETH_HLEN).l4).0;
    let out = h.run(&from_remote6(L4::Udp { src: 53, dst: dual_port }, b"a"));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    assert_eq!(&out.packet[12..14], &[0x08, 0x00], "its tunnel stays IPv4");
    assert_eq!(ipv4_fields_at(&out.packet, ETH_HLEN).dst, CLIENT_IP);
    assert_eq!(ipv6_at(&out.packet, ETH_HLEN + 50).dst, CLIENT_IP6);
}

/// What a hostile pod (or anyone who can reach the tunnel port) might send
/// over IPv6: every check the IPv4 tunnel makes, and the inner source
/// must be the outer one. Nothing of it leaves, and no binding is made.
#[test]
fn an_ipv6_tunnel_proves_its_sender() {
    let mut h = harness();
    let udp = L4::Udp { src: 40_000, dst: 53 };
    let stranger = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0x3, 0, 0, 0, 0x66);
    let inner = frame6(CLIENT_MAC, TUNNEL_GATEWAY_MAC, stranger, REMOTE_IP6, 64, udp, b"x");
    let ipv4_inner = frame(CLIENT_MAC, TUNNEL_GATEWAY_MAC, CLIENT_IP, REMOTE_IP, 64, udp, b"x");
    let cases = [
        ("an unlisted pod", tunnel6(stranger, VNI, &inner), "drop_unknown_client"),
        ("another VNI", tunnel6(POD6, VNI + 1, &from_pod6(udp, b"x")[INNER_ETH_OFF..]), "drop_bad_vni"),
        // Another client's address inside: its replies would go to POD6.
        ("another client's address inside", from_pod6_as(OTHER_POD6, udp, b"x"), "drop_spoofed_inner_source"),
        (
            "a dual-stack client's address inside",
            from_pod6_as(CLIENT_IP6, udp, b"x"),
            "drop_spoofed_inner_source",
        ),
        (
            "another listed pod outside, POD6 inside",
            tunnel6(OTHER_POD6, VNI, &from_pod6(udp, b"x")[INNER_ETH_OFF..]),
            "drop_spoofed_inner_source",
        ),
        // A dual-stack pod tunnels over IPv4: its IPv6 address is no
        // tunnel's source, even with itself inside.
        (
            "a dual-stack client's address outside",
            tunnel6(CLIENT_IP6, VNI, &from_pod6_as(CLIENT_IP6, udp, b"x")[INNER_ETH_OFF..]),
            "drop_unknown_client",
        ),
        ("IPv4 inside", tunnel6(POD6, VNI, &ipv4_inner), "drop_unsupported_protocol"),
    ];
    for (what, packet, counter) in cases {
        let before = h.counter(counter);
        assert_eq!(h.run(&packet).action, TC_ACT_SHOT, "{what}: dropped");
        assert_eq!(h.counter(counter), before + 1, "{what}: counted as {counter}");
    }
    assert!(h.flows6().is_empty(), "no binding for any of them");
    assert!(h.flows().is_empty());
    assert_eq!(h.counter("forwarded_to_remote"), 0);

    // UDP to another port of the gateway's IPv6 address is no tunnel: the
    // pod's own.
    let mut other_port = from_pod6(udp, b"x");
    other_port[ETH_HLEN + IPV6_HLEN + 2..ETH_HLEN + IPV6_HLEN + 4].copy_from_slice(&4790u16.to_be_bytes());
    assert_eq!(h.run(&other_port).action, TC_ACT_UNSPEC);
}

/// A reply that fits a tunnel over IPv4 but not one over IPv6 draws
/// Packet Too Big with the IPv6 tunnel's MTU: eth0's less 70.
#[test]
fn a_reply_too_big_for_the_ipv6_tunnel_is_answered_with_its_mtu() {
    let mut h = harness();
    let nat_port = nat_port_of(&sent(&mut h, &from_pod6(L4::Udp { src: 40_002, dst: 53 }, b"query")));
    let reply_of_len =
        |ip_len: usize| from_remote6(L4::Udp { src: 53, dst: nat_port }, &vec![5; ip_len - 48]);
    let tunnel_mtu = 1500 - TUNNEL6_LEN;
    let inner = tunnelled6(&h.run(&reply_of_len(tunnel_mtu)));
    assert_eq!(inner.l4.len(), tunnel_mtu - IPV6_HLEN, "a reply that just fits");
    let out = h.run(&reply_of_len(tunnel_mtu + 1));
    assert_eq!(out.action, TC_ACT_REDIRECT, "answered");
    let answer = ipv6_at(&out.packet, ETH_HLEN);
    assert_eq!((answer.src, answer.dst), (GATEWAY_IP6, REMOTE_IP6));
    assert_eq!((answer.l4[0], answer.l4[1]), (2, 0), "Packet Too Big");
    let mtu = u32::from_be_bytes([answer.l4[4], answer.l4[5], answer.l4[6], answer.l4[7]]) as usize;
    assert_eq!(mtu, tunnel_mtu, "the IPv6 tunnel's MTU");
    assert_eq!(h.counter("icmp_too_big_to_remote"), 1);
    assert_eq!(h.counter("forwarded_to_client"), 1);
}

/// The gateway answers an expiring packet as a hop, back in the tunnel
/// over IPv6.
#[test]
fn an_expiring_packet_is_answered_through_the_ipv6_tunnel() {
    let mut h = harness();
    for len in [11, 1400] {
        let frame = frame6(
            CLIENT_MAC,
            TUNNEL_GATEWAY_MAC,
            POD6,
            REMOTE_IP6,
            1,
            L4::Udp { src: 33_434, dst: 33_435 },
            &vec![7; len],
        );
        let out = h.run(&tunnel6(POD6, VNI, &frame));
        let answer = tunnelled6(&out);
        assert_eq!((answer.src, answer.dst), (GATEWAY_IP6, POD6), "from the gateway, as a hop");
        assert_eq!((answer.l4[0], answer.l4[1]), (3, 0), "hop limit exceeded in transit");
        let quote = &answer.l4[8..];
        let quoted = (frame.len() - ETH_HLEN).min(1280 - 48);
        assert!(quote == &frame[ETH_HLEN..ETH_HLEN + quoted], "a {len}-byte probe is quoted as it came");
    }
    assert_eq!(h.counter("icmp_error_to_client"), 2);
    assert!(h.flows6().is_empty());
}

/// A router's error about the pod's flow reaches the pod through its IPv6
/// tunnel; the pod's own error about a reply reaches the remote (each in
/// a program of its own, compiled for the IPv6 tunnel).
#[test]
fn icmpv6_errors_cross_both_ways() {
    let mut h = harness();
    let out = h.run(&from_pod6(L4::Udp { src: 40_003, dst: 53 }, b"big request"));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let left = out.packet[ETH_HLEN..].to_vec();
    let nat_port = ports(&ipv6_at(&out.packet, ETH_HLEN).l4).0;
    let router = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let mut error = Vec::new();
    PacketBuilder::ethernet2(NODE_MAC, GATEWAY_MAC)
        .ipv6(router.octets(), GATEWAY_IP6.octets(), 60)
        .icmpv6(Icmpv6Type::Unknown { type_u8: 2, code_u8: 0, bytes5to8: 1280u32.to_be_bytes() })
        .write(&mut error, &left)
        .unwrap();
    let translated = tunnelled6(&h.run(&error));
    assert_eq!((translated.src, translated.dst), (router, POD6));
    let quote = ipv6_at(&translated.l4, 8);
    assert_eq!((quote.src, quote.dst), (POD6, REMOTE_IP6), "the pod's own packet");
    assert_eq!(ports(&quote.l4), (40_003, 53));

    // The pod's port unreachable about a late reply.
    let reply =
        frame6(NODE_MAC, GATEWAY_MAC, REMOTE_IP6, POD6, 50, L4::Udp { src: 53, dst: 40_003 }, b"late");
    let mut inner = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, TUNNEL_GATEWAY_MAC)
        .ipv6(POD6.octets(), REMOTE_IP6.octets(), 64)
        .icmpv6(Icmpv6Type::Unknown { type_u8: 1, code_u8: 4, bytes5to8: [0; 4] })
        .write(&mut inner, &reply[ETH_HLEN..])
        .unwrap();
    let unreachable = sent(&mut h, &tunnel6(POD6, VNI, &inner));
    assert_eq!(unreachable.dst, REMOTE_IP6);
    let quote = &unreachable.l4[8..];
    assert_eq!(&quote[24..40], &GATEWAY_IP6.octets(), "the remote's packet, to the gateway");
    assert_eq!(ports(&quote[40..]), (53, nat_port), "and its NAT port");
    assert_eq!(h.counter("icmp_error_to_remote"), 1);

    // Another client's flow named in the pod's error: not the pod's.
    let out = h.run(&from_client6(L4::Udp { src: 40_004, dst: 53 }, b"q"));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let others =
        frame6(NODE_MAC, GATEWAY_MAC, REMOTE_IP6, CLIENT_IP6, 50, L4::Udp { src: 53, dst: 40_004 }, b"x");
    let mut inner = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, TUNNEL_GATEWAY_MAC)
        .ipv6(POD6.octets(), REMOTE_IP6.octets(), 64)
        .icmpv6(Icmpv6Type::Unknown { type_u8: 1, code_u8: 4, bytes5to8: [0; 4] })
        .write(&mut inner, &others[ETH_HLEN..])
        .unwrap();
    assert_eq!(h.run(&tunnel6(POD6, VNI, &inner)).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_no_mapping"), 1);
}

/// An IPv6 fragment of `src` → `dst` (a fragment header first), UDP
/// ports in the first.
fn fragment6(src: Ipv6Addr, dst: Ipv6Addr, offset: u16, more: bool, body: &[u8]) -> Vec<u8> {
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[44, 64]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    ip.extend_from_slice(&[17, 0]);
    ip.extend_from_slice(&((offset << 3) | more as u16).to_be_bytes());
    ip.extend_from_slice(&0x0bad_cafe_u32.to_be_bytes());
    ip.extend_from_slice(body);
    ip
}

/// A UDP header of a 3,000-byte datagram (its checksum, over the whole,
/// is nonzero and not checked here) and the first fragment's data.
fn udp_first(src: u16, dst: u16) -> Vec<u8> {
    let mut body =
        [src.to_be_bytes(), dst.to_be_bytes(), 3008u16.to_be_bytes(), 0x1234u16.to_be_bytes()].concat();
    body.extend_from_slice(&[9; 1192]);
    body
}

/// A datagram in fragments crosses both ways, its later fragments
/// following the first.
#[test]
fn fragments_cross_both_ways() {
    let mut h = harness();
    let with_eth = |ip: &[u8]| [&TUNNEL_GATEWAY_MAC[..], &CLIENT_MAC[..], &[0x86, 0xdd], ip].concat();
    let first = with_eth(&fragment6(POD6, REMOTE_IP6, 0, true, &udp_first(40_005, 53)));
    let out = h.run(&tunnel6(POD6, VNI, &first));
    assert_eq!(out.action, TC_ACT_REDIRECT, "the first fragment sent on");
    let ip = &out.packet[ETH_HLEN..];
    assert_eq!(&ip[8..24], &GATEWAY_IP6.octets());
    let nat_port = u16::from_be_bytes([ip[48], ip[49]]);
    assert!((20_000..=20_099).contains(&nat_port));
    let later = with_eth(&fragment6(POD6, REMOTE_IP6, 150, false, &[9; 1800]));
    let out = h.run(&tunnel6(POD6, VNI, &later));
    assert_eq!(out.action, TC_ACT_REDIRECT, "the later fragment follows");
    assert_eq!(&out.packet[ETH_HLEN + 8..ETH_HLEN + 24], &GATEWAY_IP6.octets());
    assert_eq!(h.flows6()[0].flags & FLOW_OUTER_IPV6, FLOW_OUTER_IPV6);

    // The reply's first fragment goes back in the IPv6 tunnel.
    let reply = [
        &GATEWAY_MAC[..],
        &NODE_MAC[..],
        &[0x86, 0xdd],
        &fragment6(REMOTE_IP6, GATEWAY_IP6, 0, true, &udp_first(53, nat_port)),
    ]
    .concat();
    let out = h.run(&reply);
    assert_eq!(out.action, TC_ACT_REDIRECT, "the reply's first fragment sent to the pod");
    assert_eq!(&out.packet[ETH_HLEN + 24..ETH_HLEN + 40], &POD6.octets(), "in the tunnel to the pod");
    let inner = &out.packet[INNER_IP_OFF..];
    assert_eq!(&inner[24..40], &POD6.octets());
    assert_eq!(u16::from_be_bytes([inner[50], inner[51]]), 40_005, "the pod's own port");
    // Its later fragment follows it there.
    let later = [
        &GATEWAY_MAC[..],
        &NODE_MAC[..],
        &[0x86, 0xdd],
        &fragment6(REMOTE_IP6, GATEWAY_IP6, 150, false, &[9; 800]),
    ]
    .concat();
    let out = h.run(&later);
    assert_eq!(out.action, TC_ACT_REDIRECT, "the reply's later fragment sent to the pod");
    assert_eq!(&out.packet[ETH_HLEN + 24..ETH_HLEN + 40], &POD6.octets(), "in the tunnel to the pod");
    assert_eq!(&out.packet[INNER_IP_OFF + 24..INNER_IP_OFF + 40], &POD6.octets());
    assert_eq!(h.counter("fragment_translated"), 2);

    // A first fragment that fits a tunnel over IPv4 but not this one draws
    // Packet Too Big with this tunnel's MTU (the overhead handed on from
    // `egress_frag6_in`).
    // 1,448 bytes of IPv6: over 1,500 - 70, within 1,500 - 50.
    let mut body = udp_first(53, nat_port);
    body.resize(1400, 9);
    let too_big =
        [&GATEWAY_MAC[..], &NODE_MAC[..], &[0x86, 0xdd], &fragment6(REMOTE_IP6, GATEWAY_IP6, 0, true, &body)]
            .concat();
    let out = h.run(&too_big);
    assert_eq!(out.action, TC_ACT_REDIRECT, "answered");
    let answer = ipv6_at(&out.packet, ETH_HLEN);
    assert_eq!((answer.dst, answer.l4[0]), (REMOTE_IP6, 2), "Packet Too Big to the remote");
    let mtu = u32::from_be_bytes([answer.l4[4], answer.l4[5], answer.l4[6], answer.l4[7]]);
    assert_eq!(mtu as usize, 1500 - TUNNEL6_LEN, "the IPv6 tunnel's MTU");
}

/// The agent lists a pod without IPv4 by its IPv6 address: in CLIENTS6
/// alone. It sends through its IPv6 tunnel; a restarted agent keeps it
/// under the same id, its flow going on; unlisted, its bindings go with
/// it and it sends nothing.
#[test]
fn the_agent_lists_a_pod_without_ipv4_by_its_ipv6_address() {
    let mut h = Harness::default();
    for ip in [CLIENT_IP, SECOND_CLIENT_IP] {
        h.datapath.maps.remove_client(ip).unwrap();
    }
    for ip in [CLIENT_IP6, SECOND_CLIENT_IP6] {
        h.datapath.maps.remove_client6(ip).unwrap();
    }
    let identity = ClientIdentity { name: "apps/v6".into(), uid: "uid-v6".into(), ipv6: None };
    let listed: ClientSnapshot = [(POD6.into(), identity.clone())].into();
    let mut table = ClientTable::default();
    table.apply(&mut h.datapath.maps, &listed).unwrap();
    let id = table.clients()[&POD6.into()].id;
    assert_eq!(h.datapath.maps.client6_ids().unwrap(), [(POD6, id)].into(), "in CLIENTS6");
    assert!(h.datapath.maps.client_ids().unwrap().is_empty(), "and nothing in CLIENTS");

    let udp = L4::Udp { src: 40_006, dst: 53 };
    let nat_port = nat_port_of(&sent(&mut h, &from_pod6(udp, b"q")));
    tunnelled6(&h.run(&from_remote6(L4::Udp { src: 53, dst: nat_port }, b"a")));

    let known = [(POD6.into(), identity)].into();
    let mut adopted = ClientTable::carried_over(&mut h.datapath.maps, &known).unwrap();
    assert_eq!(adopted.clients()[&POD6.into()].id, id, "the same id after a restart");
    adopted.apply(&mut h.datapath.maps, &listed).unwrap();
    assert_eq!(h.flows6().len(), 1, "its flow goes on");
    tunnelled6(&h.run(&from_remote6(L4::Udp { src: 53, dst: nat_port }, b"a")));

    adopted.apply(&mut h.datapath.maps, &ClientSnapshot::new()).unwrap();
    assert!(h.datapath.maps.client6_ids().unwrap().is_empty(), "unlisted");
    assert!(h.flows6().is_empty() && h.reply_entries6() == 0, "its bindings went with it");
    assert_eq!(h.run(&from_pod6(udp, b"q")).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_unknown_client"), 1, "a pod that left sends nothing");
}
