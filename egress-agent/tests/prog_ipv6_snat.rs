//! A labeled pod's IPv6 packets translated on their way out: the tunnel
//! comes off, the packet leaves as IPv6 from the gateway's IPv6 address on
//! a NAT port, with a binding in the IPv6 conntrack under the same rules
//! as IPv4's. Every checksum is verified with our own code (`ipv6_at`).
mod common;

use std::net::Ipv6Addr;

use common::*;
use egress_common::{
    config::{GatewayConfig, TUNNEL_GATEWAY_MAC},
    conntrack::{FlowState, FLOW_SEEN_REPLY},
};

const ETH_HLEN: usize = 14;
/// What comes off a client's IPv6 packet: outer IPv4, UDP, VXLAN and the
/// inner Ethernet header (the outer Ethernet header stays).
const TUNNEL_OVERHEAD: usize = 50;

/// Sends the client's `l4` and returns the packet that left.
fn send(h: &mut Harness, l4: L4, payload: &[u8]) -> Ipv6View {
    let packet = from_client6(l4, payload);
    let out = h.run(&packet);
    assert_eq!(out.action, TC_ACT_REDIRECT, "sent on");
    assert_eq!(out.packet.len(), packet.len() - TUNNEL_OVERHEAD, "the tunnel came off");
    assert_eq!(&out.packet[12..14], &[0x86, 0xdd], "the Ethernet header says IPv6");
    ipv6_at(&out.packet, ETH_HLEN)
}

#[test]
fn tcp_leaves_from_the_gateway_s_ipv6_address_on_a_nat_port() {
    let mut h = Harness::default();
    let out = send(&mut h, tcp_syn(40_000, 443), b"hello");
    assert_eq!(out.src, GATEWAY_IP6);
    assert_eq!(out.dst, REMOTE_IP6);
    assert_eq!(out.hop_limit, 63, "one hop");
    assert_eq!(out.next_header, 6);
    let (nat_port, remote_port) = ports(&out.l4);
    assert!((20_000..=20_099).contains(&nat_port), "a NAT port: {nat_port}");
    assert_eq!(remote_port, 443);
    assert_eq!(&out.l4[20..], b"hello", "the payload is untouched");

    let flows = h.flows6();
    assert_eq!(flows.len(), 1);
    let flow = flows[0];
    assert_eq!(Ipv6Addr::from(flow.client_ip), CLIENT_IP6);
    assert_eq!(Ipv6Addr::from(flow.remote_ip), REMOTE_IP6);
    assert_eq!(u16::from_be(flow.client_port_be), 40_000);
    assert_eq!(u16::from_be(flow.nat_port_be), nat_port);
    assert_eq!(flow.client_outer_ip_be, u32::from(CLIENT_IP).to_be(), "replies go back to its worker");
    assert_eq!(flow.client_id, 1);
    assert_eq!(flow.client_mac, CLIENT_MAC);
    assert_eq!(flow.tunnel_gateway_mac, TUNNEL_GATEWAY_MAC);
    assert_eq!(flow.state, FlowState::SynSent as u8);
    assert_eq!(flow.flags & FLOW_SEEN_REPLY, 0, "unreplied");
    assert_eq!(h.reply_entries6(), 1, "both halves");
    assert!(h.flows().is_empty(), "nothing in the IPv4 table");
    assert_eq!(h.counter("flow_created"), 1);

    // The flow's next packet takes the same port and makes nothing new.
    let again = send(&mut h, tcp_ack(40_000, 443), b"more");
    assert_eq!(ports(&again.l4).0, nat_port);
    assert_eq!(h.flows6().len(), 1);
    assert_eq!(h.counter("forwarded_to_remote"), 2);
}

#[test]
fn udp_and_echo_are_translated_with_their_checksums() {
    let mut h = Harness::default();
    let udp = send(&mut h, L4::Udp { src: 40_001, dst: 53 }, b"query");
    assert_eq!(udp.src, GATEWAY_IP6);
    assert_eq!(udp.next_header, 17);
    let udp_port = ports(&udp.l4).0;
    assert!((20_000..=20_099).contains(&udp_port));
    // Echo: the identifier is the NAT port, and ICMPv6's checksum covers
    // the addresses (a pseudo-header, unlike ICMP's).
    let echo = send(&mut h, L4::EchoRequest { id: 7 }, b"ping");
    assert_eq!(echo.next_header, 58);
    assert_eq!(echo.l4[0], 128, "still an echo request");
    let echo_id = icmp_id(&echo.l4);
    assert!((20_000..=20_099).contains(&echo_id), "identifier {echo_id}");
    assert_eq!(h.flows6().len(), 2);
    // A client port already in the NAT range is kept when free.
    let kept = send(&mut h, L4::Udp { src: 20_050, dst: 53 }, b"");
    assert_eq!(ports(&kept.l4).0, 20_050);
}

#[test]
fn congestion_marked_on_the_tunnel_reaches_the_ipv6_packet() {
    let mut h = Harness::default();
    // Inner ECT(0) under an outer CE: the packet leaves CE (RFC 6040),
    // its DSCP kept.
    let mut packet = from_client6(L4::Udp { src: 40_002, dst: 53 }, b"x");
    let inner = ETH_HLEN + TUNNEL_OVERHEAD;
    packet[ETH_HLEN + 1] |= 0x03; // outer CE (the outer header checksum is not checked)
    packet[inner] = 0x6b; // traffic class 0xb8 | ECT(0): DSCP 46
    packet[inner + 1] = 0xa0;
    let out = h.run(&packet);
    assert_eq!(out.action, TC_ACT_REDIRECT);
    assert_eq!(ipv6_at(&out.packet, ETH_HLEN).traffic_class, 0xbb, "DSCP 46, CE");
    // Not ECN-capable under CE: dropped, nothing made.
    let mut not_ect = from_client6(L4::Udp { src: 40_003, dst: 53 }, b"x");
    not_ect[ETH_HLEN + 1] |= 0x03;
    assert_eq!(h.run(&not_ect).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_ce_on_not_ect"), 1);
    assert_eq!(h.flows6().len(), 1);
}

#[test]
fn a_lone_rst_makes_no_binding() {
    let mut h = Harness::default();
    let rst = L4::Tcp { src: 40_004, dst: 443, syn: false, ack: false, fin: false, rst: true };
    assert_eq!(h.run(&from_client6(rst, b"")).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_rst_without_flow"), 1);
    assert!(h.flows6().is_empty());
}

#[test]
fn a_client_s_ipv4_and_ipv6_flows_count_against_one_share() {
    // A share of two flows, held by two answered IPv4 ones (an answered
    // flow never makes room).
    let cfg = GatewayConfig { max_flows_per_client: 2, ..config((20_000, 20_099)) };
    let mut h = Harness::with_config(&cfg, 4096);
    for port in [40_010, 40_011] {
        let nat_port = open_flow(&mut h, tcp_syn(port, 443), b"");
        let answer = L4::Tcp { src: 443, dst: nat_port, syn: true, ack: true, fin: false, rst: false };
        assert_eq!(h.run(&from_remote(answer, b"")).action, TC_ACT_REDIRECT);
    }
    // An IPv6 flow of the same client is over the share: refused, counted.
    assert_eq!(h.run(&from_client6(L4::Udp { src: 40_021, dst: 53 }, b"")).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_client_flow_limit"), 1);
    assert!(h.flows6().is_empty());
    // Another client is not held back by it.
    let other =
        frame6(CLIENT_MAC, TUNNEL_GATEWAY_MAC, SECOND_CLIENT_IP6, REMOTE_IP6, 64, tcp_syn(40_022, 443), b"");
    assert_eq!(h.run(&tunnel(SECOND_CLIENT_IP, VNI, &other)).action, TC_ACT_REDIRECT);
    assert_eq!(h.flows6().len(), 1);
}

#[test]
fn a_destination_s_nat_ports_run_out_for_it_alone() {
    // Two NAT ports: two flows to one remote endpoint take both.
    let mut h = Harness::new((20_000, 20_001));
    for port in [40_030, 40_031] {
        send(&mut h, tcp_syn(port, 443), b"");
    }
    assert_eq!(h.run(&from_client6(tcp_syn(40_032, 443), b"")).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_nat_ports_exhausted"), 1);
    // Another port of the same remote is another destination.
    send(&mut h, tcp_syn(40_032, 444), b"");
    assert_eq!(h.flows6().len(), 3);
    // What the agent says of it (the warning line and the metric's label).
    assert_eq!(h.exhausted(), vec![(format!("[{REMOTE_IP6}]:443/tcp"), 1)]);
}

#[test]
fn two_clients_with_the_same_ports_to_one_remote_get_different_nat_ports() {
    let mut h = Harness::default();
    let first = send(&mut h, tcp_syn(40_040, 443), b"");
    let other =
        frame6(CLIENT_MAC, TUNNEL_GATEWAY_MAC, SECOND_CLIENT_IP6, REMOTE_IP6, 64, tcp_syn(40_040, 443), b"");
    let out = h.run(&tunnel(SECOND_CLIENT_IP, VNI, &other));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let second = ipv6_at(&out.packet, ETH_HLEN);
    assert_eq!(second.src, GATEWAY_IP6);
    assert_ne!(ports(&first.l4).0, ports(&second.l4).0, "one reply tuple, one binding");
    let mut clients: Vec<u32> = h.flows6().iter().map(|f| f.client_id).collect();
    clients.sort();
    assert_eq!(clients, [1, 2]);
}
