//! Client -> remote: decapsulation and SNAT, byte for byte.
mod common;

use common::*;
use egress_common::{conntrack::FlowState, ip::IPPROTO_TCP};

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
    assert_eq!(f.protocol, IPPROTO_TCP);
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
fn each_side_s_fin_is_tracked_and_only_both_close_the_flow() {
    let mut h = Harness::default();
    let nat_port = ports(&ipv4_at(&h.run(&from_client(tcp_syn(40_000, 80), b"")).packet, 14).l4).0;
    h.run(&from_remote(
        L4::Tcp { src: 80, dst: nat_port, syn: true, ack: true, fin: false, rst: false },
        b"",
    ));
    assert_eq!(h.flows()[0].state, FlowState::Open as u8);
    // The client half-closes; the remote keeps sending: still a long timeout.
    assert_eq!(h.run(&from_client(tcp_fin(40_000, 80), b"")).action, TC_ACT_REDIRECT);
    assert_eq!(h.flows()[0].state, FlowState::HalfClosedByClient as u8);
    assert_eq!(h.run(&from_remote(tcp_ack(80, nat_port), b"more data")).action, TC_ACT_REDIRECT);
    assert_eq!(h.flows()[0].state, FlowState::HalfClosedByClient as u8);
    // The remote's FIN completes the close.
    assert_eq!(h.run(&from_remote(tcp_fin(80, nat_port), b"")).action, TC_ACT_REDIRECT);
    assert_eq!(h.flows()[0].state, FlowState::Closing as u8);
    // A new SYN on the same client port starts the binding over.
    assert_eq!(h.run(&from_client(tcp_syn(40_000, 80), b"")).action, TC_ACT_REDIRECT);
    assert_eq!(h.flows()[0].state, FlowState::SynSent as u8);
}

#[test]
fn rst_closes_at_once() {
    let mut h = Harness::default();
    h.run(&from_client(tcp_syn(40_000, 80), b""));
    let rst = L4::Tcp { src: 40_000, dst: 80, syn: false, ack: false, fin: false, rst: true };
    assert_eq!(h.run(&from_client(rst, b"")).action, TC_ACT_REDIRECT);
    assert_eq!(h.flows()[0].state, FlowState::Closing as u8);
}

#[test]
fn a_flow_whose_nat_port_was_taken_is_rebound_never_shared() {
    // Two NAT ports; flow A takes one, then loses its reply half (as while
    // the agent's sweep removes a binding's halves one after the other).
    let mut h = Harness::new((20_000, 20_001));
    let a_port = ports(&ipv4_at(&h.run(&from_client(tcp_syn(1000, 80), b"")).packet, 14).l4).0;
    let a_reply = h.datapath.maps.ct_reply.keys().next().unwrap().unwrap();
    h.datapath.maps.ct_reply.remove(&a_reply).unwrap();
    // Another client's flow to the same remote endpoint may now draw A's
    // port. Open flows until one does.
    let mut b_port = 0;
    for client_port in 2000..2100 {
        let out = h.run(&from_client_at(SECOND_CLIENT_IP, tcp_syn(client_port, 80), b""));
        let port = ports(&ipv4_at(&out.packet, 14).l4).0;
        if port == a_port {
            b_port = port;
            break;
        }
        // Not A's port: give it back so the next try can draw again.
        let key = h
            .datapath
            .maps
            .ct_reply
            .keys()
            .filter_map(|k| k.ok())
            .find(|k| u16::from_be(k.dst_port_be) == port)
            .unwrap();
        h.datapath.maps.ct_reply.remove(&key).unwrap();
    }
    assert_eq!(b_port, a_port, "the second client drew the freed NAT port");
    // A's next packet must not leave on B's 5-tuple.
    let out = h.run(&from_client(tcp_ack(1000, 80), b""));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let a_new = ports(&ipv4_at(&out.packet, 14).l4).0;
    assert_ne!(a_new, b_port, "flow A rebound to another NAT port");
    assert_eq!(h.counter("flow_rebound"), 1);
    // Replies on B's port still reach B, and only B.
    let out = h.run(&from_remote(
        L4::Tcp { src: 80, dst: b_port, syn: true, ack: true, fin: false, rst: false },
        b"",
    ));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    assert_eq!(ipv4_at(&out.packet, 64).dst, SECOND_CLIENT_IP);
}
