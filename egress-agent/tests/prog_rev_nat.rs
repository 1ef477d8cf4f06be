//! Remote -> client: reverse NAT and re-encapsulation to the right worker.
mod common;

use common::*;
use egress_common::{config::TUNNEL_GATEWAY_MAC, conntrack::FlowState};

#[test]
fn tcp_reply_is_reverse_natted_and_encapsulated_to_the_client() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, tcp_syn(40_000, 443), b"");
    let syn_ack = L4::Tcp { src: 443, dst: nat_port, syn: true, ack: true, fin: false, rst: false };
    let reply = from_remote(syn_ack, b"world");
    let out = h.run(&reply);
    assert_eq!(out.action, TC_ACT_REDIRECT);
    assert_eq!(out.packet.len(), reply.len() + 50);

    let outer = ipv4_at(&out.packet, 14);
    assert_eq!((outer.src, outer.dst, outer.protocol), (GATEWAY_IP, CLIENT_IP, 17));
    assert_eq!(
        ports(&outer.l4),
        (VXLAN_PORT, VXLAN_PORT),
        "the source port is the one the Service conntrack expects"
    );
    assert_eq!(&outer.l4[6..8], &[0, 0], "outer UDP checksum zero");
    let vxlan = &outer.l4[8..16];
    assert_eq!(vxlan[0], 0x08, "VNI-present flag");
    assert_eq!(u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]), VNI);
    let inner_eth = &outer.l4[16..30];
    assert_eq!(&inner_eth[0..6], &CLIENT_MAC, "to the worker's tunnel device");
    assert_eq!(&inner_eth[6..12], &TUNNEL_GATEWAY_MAC, "from the MAC the worker addressed");
    assert_eq!(&inner_eth[12..14], &[0x08, 0x00]);

    let inner = ipv4_at(&out.packet, 14 + 50);
    assert_eq!((inner.src, inner.dst), (REMOTE_IP, CLIENT_IP));
    assert_eq!(inner.ttl, 49);
    assert_eq!(ports(&inner.l4), (443, 40_000));
    assert_eq!(&inner.l4[20..], b"world");

    assert_eq!(h.flows()[0].state, FlowState::Open as u8, "the answer opens the flow");
    assert_eq!(h.counter("forwarded_to_client"), 1);
}

#[test]
fn udp_reply_returns_to_the_client_port() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, L4::Udp { src: 5353, dst: 53 }, b"");
    let out = h.run(&from_remote(L4::Udp { src: 53, dst: nat_port }, b"answer"));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let inner = ipv4_at(&out.packet, 64);
    assert_eq!(inner.dst, CLIENT_IP);
    assert_eq!(ports(&inner.l4), (53, 5353));
}

#[test]
fn echo_reply_returns_with_the_original_identifier() {
    let mut h = Harness::default();
    let nat_id = open_flow(&mut h, L4::EchoRequest { id: 777 }, b"");
    let out = h.run(&from_remote(L4::EchoReply { id: nat_id }, b"ping"));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    let inner = ipv4_at(&out.packet, 64);
    assert_eq!((inner.dst, inner.l4[0], icmp_id(&inner.l4)), (CLIENT_IP, 0, 777));
}

#[test]
fn reply_from_another_remote_port_has_no_mapping() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, tcp_syn(40_000, 443), b"");
    let stranger = L4::Tcp { src: 444, dst: nat_port, syn: true, ack: true, fin: false, rst: false };
    assert_eq!(h.run(&from_remote(stranger, b"")).action, TC_ACT_SHOT);
    assert_eq!(h.counter("drop_no_mapping"), 1);
}

#[test]
fn evicted_reply_half_is_restored_from_the_original() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, tcp_syn(40_000, 443), b"");
    let reply_key = h.datapath.maps.ct_reply.keys().next().unwrap().unwrap();
    h.datapath.maps.ct_reply.remove(&reply_key).unwrap();
    // Age the original half so the next packet refreshes (and repairs) it.
    let key = h.datapath.maps.ct_original.keys().next().unwrap().unwrap();
    let mut entry = h.datapath.maps.ct_original.get(&key, 0).unwrap();
    entry.last_seen_ns = entry.last_seen_ns.saturating_sub(2_000_000_000);
    h.datapath.maps.ct_original.insert(key, entry, 0).unwrap();
    let ack = L4::Tcp { src: 40_000, dst: 443, syn: false, ack: true, fin: false, rst: false };
    assert_eq!(h.run(&from_client(ack, b"")).action, TC_ACT_REDIRECT);
    assert_eq!(h.counter("flow_half_restored"), 1);
    let syn_ack = L4::Tcp { src: 443, dst: nat_port, syn: true, ack: true, fin: false, rst: false };
    assert_eq!(h.run(&from_remote(syn_ack, b"")).action, TC_ACT_REDIRECT);
}
