//! Client -> remote: decapsulation and SNAT, byte for byte.
mod common;

use common::*;
use egress_common::conntrack::{FlowState, PROTO_TCP};

#[test]
fn tcp_syn_is_decapsulated_and_source_natted() {
    let mut h = Harness::default();
    let packet = from_client(tcp_syn(40_000, 443), b"hello");
    let out = h.run(&packet);
    assert_eq!(out.action, TC_ACT_REDIRECT);
    assert_eq!(out.packet.len(), packet.len() - 50, "outer IPv4/UDP/VXLAN and inner Ethernet removed");
    assert_eq!(&out.packet[12..14], &[0x08, 0x00]);
    let ip = ipv4_at(&out.packet, 14);
    assert_eq!(ip.src, GATEWAY_IP);
    assert_eq!(ip.dst, REMOTE_IP);
    assert_eq!(ip.ttl, 63, "forwarding decrements the TTL");
    let (sport, dport) = ports(&ip.l4);
    assert!((20_000..=20_099).contains(&sport), "NAT port {sport} in range");
    assert_eq!(dport, 443);
    assert_eq!(&ip.l4[20..], b"hello", "payload untouched");

    let flows = h.flows();
    assert_eq!(flows.len(), 1);
    let f = flows[0];
    assert_eq!(u16::from_be(f.nat_port_be), sport);
    assert_eq!(u16::from_be(f.client_port_be), 40_000);
    assert_eq!(f.protocol, PROTO_TCP);
    assert_eq!(f.state, FlowState::SynSent as u8);
    assert_eq!(f.client_mac, CLIENT_MAC);
    assert_eq!(h.reply_entries(), 1, "both halves of the binding exist");
    assert_eq!(h.counter("forwarded_to_remote"), 1);
    assert_eq!(h.counter("flow_created"), 1);
}

#[test]
fn a_flow_keeps_its_nat_port_and_flows_get_distinct_ports() {
    let mut h = Harness::default();
    let first = ports(&ipv4_at(&h.run(&from_client(tcp_syn(40_000, 443), b"")).packet, 14).l4).0;
    let again = ports(&ipv4_at(&h.run(&from_client(tcp_syn(40_000, 443), b"")).packet, 14).l4).0;
    assert_eq!(first, again);
    let mut seen = std::collections::HashSet::new();
    for client_port in 41_000..41_050 {
        let out = h.run(&from_client(tcp_syn(client_port, 443), b""));
        assert_eq!(out.action, TC_ACT_REDIRECT);
        assert!(
            seen.insert(ports(&ipv4_at(&out.packet, 14).l4).0),
            "NAT ports are unique per remote endpoint"
        );
    }
    assert_eq!(h.flows().len(), 51);
}

#[test]
fn udp_is_natted_with_a_valid_checksum() {
    let mut h = Harness::default();
    let out = h.run(&from_client(L4::Udp { src: 5353, dst: 53 }, b"query"));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let ip = ipv4_at(&out.packet, 14);
    assert_eq!((ip.src, ip.protocol), (GATEWAY_IP, 17));
    assert_ne!(&ip.l4[6..8], &[0, 0], "a real UDP checksum stays a real one");
    assert_eq!(ports(&ip.l4).1, 53);
}

#[test]
fn udp_without_checksum_stays_without() {
    let mut h = Harness::default();
    let mut inner = frame(
        CLIENT_MAC,
        egress_common::config::TUNNEL_GATEWAY_MAC,
        CLIENT_IP,
        REMOTE_IP,
        64,
        L4::Udp { src: 7000, dst: 7001 },
        b"x",
    );
    inner[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&[0, 0]);
    let out = h.run(&tunnel(CLIENT_IP, VNI, &inner));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let ip = ipv4_at(&out.packet, 14);
    assert_eq!(&ip.l4[6..8], &[0, 0]);
}

#[test]
fn icmp_echo_identifier_is_natted() {
    let mut h = Harness::default();
    let out = h.run(&from_client(L4::EchoRequest { id: 777 }, b"ping"));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let ip = ipv4_at(&out.packet, 14);
    assert_eq!((ip.src, ip.protocol, ip.l4[0]), (GATEWAY_IP, 1, 8));
    let id = icmp_id(&ip.l4);
    assert!((20_000..=20_099).contains(&id));
    assert_eq!(u16::from_be(h.flows()[0].client_port_be), 777);
}

#[test]
fn fin_moves_the_flow_to_closing() {
    let mut h = Harness::default();
    h.run(&from_client(tcp_syn(40_000, 80), b""));
    let fin = L4::Tcp { src: 40_000, dst: 80, syn: false, ack: true, fin: true, rst: false };
    assert_eq!(h.run(&from_client(fin, b"")).action, TC_ACT_REDIRECT);
    assert_eq!(h.flows()[0].state, FlowState::Closing as u8);
}
