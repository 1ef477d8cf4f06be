//! Per-client traffic accounting (CLIENT_TRAFFIC), packet by packet: what a
//! forwarded packet adds, to which client and direction, and that nothing
//! else adds anything. Expected numbers are computed from the packets the
//! tests build. (BPF_PROG_TEST_RUN cannot make a GSO skb; GSO super-packets
//! counting as their segments is checked with real bulk TCP in
//! tests/tests/client_traffic.rs.)
mod common;

use common::*;
use egress_agent::{
    gateway::reconcile::ClientTable,
    pods::{ClientIdentity, ClientSnapshot},
};
use egress_common::{
    config::{TUNNEL_GATEWAY_MAC, TUNNEL_OVERHEAD},
    maps::{ClientTraffic, CLIENT_ID_MAX},
};

/// Ids the harness gives CLIENT_IP and SECOND_CLIENT_IP.
const CLIENT_ID: u32 = 1;
const SECOND_CLIENT_ID: u32 = 2;

const IPV4_HLEN: u64 = 20;
const TCP_HLEN: u64 = 20;
const UDP_HLEN: u64 = 8;
const ICMP_ECHO_HLEN: u64 = 8;

fn traffic(
    to_remote_packets: u64,
    to_remote_bytes: u64,
    to_client_packets: u64,
    to_client_bytes: u64,
) -> ClientTraffic {
    ClientTraffic { to_remote_packets, to_remote_bytes, to_client_packets, to_client_bytes }
}

fn traffic_of(h: &Harness, client_id: u32) -> ClientTraffic {
    h.datapath.maps.client_traffic(client_id).unwrap()
}

/// Every slot of CLIENT_TRAFFIC, 0 (never a client's) included: a packet
/// that adds nothing leaves all of them as they were.
fn all_traffic(h: &Harness) -> Vec<ClientTraffic> {
    (0..=CLIENT_ID_MAX).map(|id| traffic_of(h, id)).collect()
}

/// The IPv4 total length field of the packet at `off`.
fn ipv4_total_len(packet: &[u8], off: usize) -> u64 {
    u16::from_be_bytes([packet[off + 2], packet[off + 3]]) as u64
}

/// The inner IPv4 length of a tunnel packet as the worker sends it.
fn inner_len(tunnel_packet: &[u8]) -> u64 {
    ipv4_total_len(tunnel_packet, 14 + TUNNEL_OVERHEAD)
}

fn syn_ack(src: u16, dst: u16) -> L4 {
    L4::Tcp { src, dst, syn: true, ack: true, fin: false, rst: false }
}

#[test]
fn a_snated_packet_adds_one_packet_and_its_inner_ipv4_length_to_to_remote() {
    let mut h = Harness::default();
    let packet = from_client(tcp_syn(40_000, 443), b"hello");
    let expected_len = IPV4_HLEN + TCP_HLEN + 5;
    assert_eq!(inner_len(&packet), expected_len, "the test's own packet");
    let out = h.run(&packet);
    assert_eq!(out.action, TC_ACT_REDIRECT);
    // What is counted is exactly what leaves: the tunnel is not.
    assert_eq!(ipv4_total_len(&out.packet, 14), expected_len);
    assert_eq!(traffic_of(&h, CLIENT_ID), traffic(1, expected_len, 0, 0));
}

#[test]
fn a_reply_adds_to_to_client_of_the_same_client_id() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, tcp_syn(40_000, 443), b"hello");
    let reply = from_remote(syn_ack(443, nat_port), b"world, longer");
    let reply_len = IPV4_HLEN + TCP_HLEN + 13;
    assert_eq!(ipv4_total_len(&reply, 14), reply_len, "the test's own packet");
    let out = h.run(&reply);
    assert_eq!(out.action, TC_ACT_REDIRECT);
    // Counted without the tunnel it leaves in.
    assert_eq!(ipv4_total_len(&out.packet, 14 + TUNNEL_OVERHEAD), reply_len);
    assert_eq!(
        traffic_of(&h, CLIENT_ID),
        traffic(1, IPV4_HLEN + TCP_HLEN + 5, 1, reply_len),
        "found through the binding's client_id, no client lookup"
    );
}

#[test]
fn packets_of_every_protocol_add_up_exactly() {
    let mut h = Harness::default();
    let mut expected = traffic(0, 0, 0, 0);
    let tcp_port = open_flow(&mut h, tcp_syn(40_000, 443), b"");
    expected.to_remote_packets += 1;
    expected.to_remote_bytes += IPV4_HLEN + TCP_HLEN;
    let udp_port = open_flow(&mut h, L4::Udp { src: 5353, dst: 53 }, b"query");
    expected.to_remote_packets += 1;
    expected.to_remote_bytes += IPV4_HLEN + UDP_HLEN + 5;
    let echo_id = open_flow(&mut h, L4::EchoRequest { id: 777 }, b"ping ping");
    expected.to_remote_packets += 1;
    expected.to_remote_bytes += IPV4_HLEN + ICMP_ECHO_HLEN + 9;

    let replies = [
        (from_remote(syn_ack(443, tcp_port), b"0123456789"), IPV4_HLEN + TCP_HLEN + 10),
        (from_remote(L4::Udp { src: 53, dst: udp_port }, &[7; 300]), IPV4_HLEN + UDP_HLEN + 300),
        (from_remote(L4::EchoReply { id: echo_id }, b"ping ping"), IPV4_HLEN + ICMP_ECHO_HLEN + 9),
        (from_remote(tcp_ack(443, tcp_port), &[1; 1000]), IPV4_HLEN + TCP_HLEN + 1000),
    ];
    for (reply, len) in &replies {
        assert_eq!(h.run(reply).action, TC_ACT_REDIRECT);
        expected.to_client_packets += 1;
        expected.to_client_bytes += len;
    }
    assert_eq!(h.run(&from_client(tcp_ack(40_000, 443), &[2; 700])).action, TC_ACT_REDIRECT);
    expected.to_remote_packets += 1;
    expected.to_remote_bytes += IPV4_HLEN + TCP_HLEN + 700;

    assert_eq!(traffic_of(&h, CLIENT_ID), expected);
    // The totals agree with the per-direction event counters.
    assert_eq!(h.counter("forwarded_to_remote"), expected.to_remote_packets);
    assert_eq!(h.counter("forwarded_to_client"), expected.to_client_packets);
}

#[test]
fn another_client_s_counters_stay_zero() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, tcp_syn(40_000, 443), b"hello");
    assert_eq!(h.run(&from_remote(syn_ack(443, nat_port), b"world")).action, TC_ACT_REDIRECT);
    assert_eq!(traffic_of(&h, SECOND_CLIENT_ID), traffic(0, 0, 0, 0));

    // And the other way round: the second client's packet is its own.
    let client_before = traffic_of(&h, CLIENT_ID);
    let out = h.run(&from_client_at(SECOND_CLIENT_IP, L4::Udp { src: 6000, dst: 53 }, b"q"));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    assert_eq!(traffic_of(&h, SECOND_CLIENT_ID), traffic(1, IPV4_HLEN + UDP_HLEN + 1, 0, 0));
    assert_eq!(traffic_of(&h, CLIENT_ID), client_before);
}

/// Runs `packet`, which must be dropped with `counter`, and checks that no
/// client's traffic (nor slot 0's) changed.
fn assert_dropped_unaccounted(h: &mut Harness, packet: &[u8], counter: &str) {
    let (before, dropped_before) = (all_traffic(h), h.counter(counter));
    assert_eq!(h.run(packet).action, TC_ACT_SHOT, "{counter}: dropped");
    assert_eq!(h.counter(counter), dropped_before + 1, "{counter}: counted as a drop");
    assert!(all_traffic(h) == before, "{counter}: a dropped packet added to a client's traffic");
}

#[test]
fn dropped_packets_from_clients_add_nothing() {
    let mut h = Harness::default();
    let inner =
        |src, dst, ttl| frame(CLIENT_MAC, TUNNEL_GATEWAY_MAC, src, dst, ttl, tcp_syn(40_000, 443), b"x");
    // Dropped before a client is known: there is no id to account to.
    let unlisted = tunnel(OTHER_POD_IP, VNI, &inner(OTHER_POD_IP, REMOTE_IP, 64));
    assert_dropped_unaccounted(&mut h, &unlisted, "drop_unknown_client");
    // Dropped after the client, and so its id, is known.
    let excluded = tunnel(CLIENT_IP, VNI, &inner(CLIENT_IP, "192.0.2.55".parse().unwrap(), 64));
    assert_dropped_unaccounted(&mut h, &excluded, "drop_excluded_destination");
    // Expired here: answered with time exceeded, but not traffic.
    let expiring = tunnel(CLIENT_IP, VNI, &inner(CLIENT_IP, REMOTE_IP, 1));
    let before = all_traffic(&h);
    assert_eq!(h.run(&expiring).action, TC_ACT_REDIRECT, "answered");
    assert_eq!(h.counter("drop_ttl_exceeded"), 1);
    assert!(all_traffic(&h) == before, "an expired packet added to a client's traffic");
    let wrong_vni = tunnel(CLIENT_IP, VNI + 1, &inner(CLIENT_IP, REMOTE_IP, 64));
    assert_dropped_unaccounted(&mut h, &wrong_vni, "drop_bad_vni");
    assert!(all_traffic(&h).iter().all(|t| *t == ClientTraffic::default()), "every slot still zero");
}

#[test]
fn dropped_replies_add_nothing() {
    let mut h = Harness::default();
    let nat_port = open_flow(&mut h, L4::Udp { src: 5353, dst: 53 }, b"query");
    // Nobody asked from this remote port.
    assert_dropped_unaccounted(
        &mut h,
        &from_remote(L4::Udp { src: 54, dst: nat_port }, b"x"),
        "drop_no_mapping",
    );
    // Dropped after the binding (and so the client id) was found.
    let mut expiring = from_remote(L4::Udp { src: 53, dst: nat_port }, b"x");
    expiring[14 + 8] = 1;
    let header_csum = egress_common::checksum::internet_checksum(&{
        let mut hdr = expiring[14..34].to_vec();
        hdr[10..12].copy_from_slice(&[0, 0]);
        hdr
    });
    expiring[14 + 10..14 + 12].copy_from_slice(&header_csum.to_be_bytes());
    assert_dropped_unaccounted(&mut h, &expiring, "drop_ttl_exceeded");
    // 1500 bytes of IPv4 plus the tunnel exceed the 1500-byte MTU. With DF
    // (as built) it becomes fragmentation needed to the remote: the
    // gateway's own answer, not the client's traffic.
    let too_big = from_remote(L4::Udp { src: 53, dst: nat_port }, &[0; 1472]);
    assert_eq!(ipv4_total_len(&too_big, 14), 1500);
    let before = all_traffic(&h);
    assert_eq!(h.run(&too_big).action, TC_ACT_REDIRECT, "answered");
    assert_eq!(h.counter("drop_too_big_for_tunnel"), 1);
    assert!(all_traffic(&h) == before, "the answer added to a client's traffic");
    assert_eq!(traffic_of(&h, CLIENT_ID), traffic(1, IPV4_HLEN + UDP_HLEN + 5, 0, 0));
}

#[test]
fn a_client_under_a_reused_id_starts_from_zero() {
    let mut h = Harness::default();
    // Clients as the agent manages them, from an empty CLIENTS map.
    h.datapath.maps.remove_client(CLIENT_IP).unwrap();
    h.datapath.maps.remove_client(SECOND_CLIENT_IP).unwrap();
    let mut table = ClientTable::default();
    let pod = |name: &str| ClientIdentity { name: name.into(), uid: String::new(), ipv6: None };
    let first: ClientSnapshot = [(CLIENT_IP.into(), pod("a"))].into();
    table.apply(&mut h.datapath.maps, &first).unwrap();
    let id = table.clients()[&CLIENT_IP.into()].id;

    let nat_port = open_flow(&mut h, tcp_syn(40_000, 443), b"hello");
    assert_eq!(h.run(&from_remote(syn_ack(443, nat_port), b"world")).action, TC_ACT_REDIRECT);
    assert_eq!(traffic_of(&h, id), traffic(1, IPV4_HLEN + TCP_HLEN + 5, 1, IPV4_HLEN + TCP_HLEN + 5));

    // Pod a leaves, pod b arrives: b gets a's id back, with none of a's counts.
    let second: ClientSnapshot = [(SECOND_CLIENT_IP.into(), pod("b"))].into();
    table.apply(&mut h.datapath.maps, &second).unwrap();
    assert_eq!(table.clients()[&SECOND_CLIENT_IP.into()].id, id, "the freed id is reused");
    assert_eq!(traffic_of(&h, id), traffic(0, 0, 0, 0));
    // a's late reply finds no binding (forgotten with a), so b is not charged.
    assert_dropped_unaccounted(&mut h, &from_remote(tcp_ack(443, nat_port), b"late"), "drop_no_mapping");

    let out = h.run(&from_client_at(SECOND_CLIENT_IP, L4::Udp { src: 6000, dst: 53 }, b"query"));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    assert_eq!(traffic_of(&h, id), traffic(1, IPV4_HLEN + UDP_HLEN + 5, 0, 0));
}
