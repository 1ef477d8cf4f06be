//! A dual-stack pod's IPv6 address as the agent manages it: listed with
//! its IPv4 from the client snapshot (`ClientTable`), unlisted with its
//! flows when the pod goes, and its IPv6 bindings swept when idle. Against
//! the real program: what a pod may send, and where replies go, after each
//! change.
mod common;

use std::net::Ipv6Addr;

use common::*;
use egress_agent::{
    datapath::{
        conntrack::{sweep_expired, Halves},
        sweeper::Sweeper,
    },
    gateway::reconcile::ClientTable,
    pods::{ClientIdentity, ClientSnapshot},
};

const ETH_HLEN: usize = 14;

/// A harness whose CLIENTS and CLIENTS6 the agent's table fills, from
/// empty maps, as a gateway does.
fn harness() -> (Harness, ClientTable) {
    let mut h = Harness::default();
    for ip in [CLIENT_IP, SECOND_CLIENT_IP] {
        h.datapath.maps.remove_client(ip).unwrap();
    }
    for ip in [CLIENT_IP6, SECOND_CLIENT_IP6] {
        h.datapath.maps.remove_client6(ip).unwrap();
    }
    (h, ClientTable::default())
}

fn pod(name: &str, ipv6: Option<Ipv6Addr>) -> ClientIdentity {
    ClientIdentity { name: name.into(), uid: format!("uid-{name}"), ipv6 }
}

/// Sends the client's IPv6 packet as `source` through `client`'s tunnel
/// and returns the NAT port it left with, or the drop counter's name.
fn send6(h: &mut Harness, client: std::net::Ipv4Addr, source: Ipv6Addr, src_port: u16) -> Result<u16, ()> {
    let out = h.run(&from_client6_at(client, source, L4::Udp { src: src_port, dst: 53 }, b"ask"));
    if out.action != TC_ACT_REDIRECT {
        return Err(());
    }
    Ok(ports(&ipv6_at(&out.packet, ETH_HLEN).l4).0)
}

fn reply6(nat_port: u16) -> Vec<u8> {
    from_remote6(L4::Udp { src: 53, dst: nat_port }, b"answer")
}

#[test]
fn a_dual_stack_pod_sends_as_its_ipv6_address_until_it_leaves() {
    let (mut h, mut table) = harness();
    let listed: ClientSnapshot = [(CLIENT_IP.into(), pod("a", Some(CLIENT_IP6)))].into();
    table.apply(&mut h.datapath.maps, &listed).unwrap();
    let id = table.clients()[&CLIENT_IP.into()].id;
    assert_eq!(
        h.datapath.maps.client6_ids().unwrap(),
        [(CLIENT_IP6, id)].into(),
        "listed under its IPv4's id"
    );

    let nat_port = send6(&mut h, CLIENT_IP, CLIENT_IP6, 40_000).expect("the pod's IPv6 leaves");
    let out = h.run(&reply6(nat_port));
    assert_eq!(out.action, TC_ACT_REDIRECT, "and its reply comes back");
    assert_eq!(h.flows6().len(), 1);

    table.apply(&mut h.datapath.maps, &ClientSnapshot::new()).unwrap();
    assert!(h.datapath.maps.client6_ids().unwrap().is_empty(), "unlisted with the pod");
    assert!(h.flows6().is_empty() && h.reply_entries6() == 0, "its IPv6 bindings went with it");
    let late = h.run(&reply6(nat_port));
    assert_eq!(late.action, TC_ACT_SHOT, "a late reply reaches no one");
    assert_eq!(h.counter("drop_no_mapping"), 1);
    assert!(send6(&mut h, CLIENT_IP, CLIENT_IP6, 40_001).is_err(), "a pod that left sends nothing");
}

/// An IPv6 address moves to another pod (the old pod's deletion and the
/// new one's start): the new holder gets none of the old one's replies,
/// and the old one's tunnel can no longer send as it.
#[test]
fn an_ipv6_address_that_moves_to_another_pod_carries_nothing_over() {
    let (mut h, mut table) = harness();
    let first: ClientSnapshot = [(CLIENT_IP.into(), pod("a", Some(CLIENT_IP6)))].into();
    table.apply(&mut h.datapath.maps, &first).unwrap();
    let a = table.clients()[&CLIENT_IP.into()].id;
    let old_port = send6(&mut h, CLIENT_IP, CLIENT_IP6, 40_000).unwrap();
    assert_eq!(h.run(&from_client(L4::Udp { src: 40_000, dst: 53 }, b"ask")).action, TC_ACT_REDIRECT);

    // Pod a stays a client by its IPv4, now without IPv6 (dual-stack off
    // for it, or its address given to the newer pod b); b holds CLIENT_IP6.
    let second: ClientSnapshot =
        [(CLIENT_IP.into(), pod("a", None)), (SECOND_CLIENT_IP.into(), pod("b", Some(CLIENT_IP6)))].into();
    table.apply(&mut h.datapath.maps, &second).unwrap();
    let b = table.clients()[&SECOND_CLIENT_IP.into()].id;
    assert_eq!(h.datapath.maps.client6_ids().unwrap(), [(CLIENT_IP6, b)].into());
    assert!(h.flows6().is_empty(), "a's IPv6 bindings are forgotten");
    assert_eq!(table.clients()[&CLIENT_IP.into()].id, a, "a is the same client");
    assert_eq!(h.flows().len(), 1, "a's IPv4 flow goes on");
    let late = h.run(&reply6(old_port));
    assert_eq!(late.action, TC_ACT_SHOT, "a's late reply does not reach b");

    assert!(send6(&mut h, CLIENT_IP, CLIENT_IP6, 40_001).is_err(), "a may no longer send as b's address");
    assert_eq!(h.counter("drop_spoofed_inner_source"), 1);
    let new_port = send6(&mut h, SECOND_CLIENT_IP, CLIENT_IP6, 40_002).expect("b sends as its address");
    let out = h.run(&reply6(new_port));
    assert_eq!(out.action, TC_ACT_REDIRECT);
    assert_eq!(ipv4_fields_at(&out.packet, ETH_HLEN).dst, SECOND_CLIENT_IP, "to b's worker");
}

/// The hostile neighbour: a labeled pod without an IPv6 address of its
/// own, or one sending as its neighbour's, is refused.
#[test]
fn a_pod_may_send_ipv6_only_as_its_own_listed_address() {
    let (mut h, mut table) = harness();
    let listed: ClientSnapshot =
        [(CLIENT_IP.into(), pod("a", None)), (SECOND_CLIENT_IP.into(), pod("b", Some(SECOND_CLIENT_IP6)))]
            .into();
    table.apply(&mut h.datapath.maps, &listed).unwrap();
    for source in [CLIENT_IP6, SECOND_CLIENT_IP6] {
        assert!(send6(&mut h, CLIENT_IP, source, 40_000).is_err(), "a as {source}");
    }
    assert_eq!(h.counter("drop_spoofed_inner_source"), 2);
    assert!(h.flows6().is_empty());
    assert!(send6(&mut h, SECOND_CLIENT_IP, SECOND_CLIENT_IP6, 40_000).is_ok(), "b as itself");
}

/// A restarted agent adopts the previous one's CLIENTS6 with its CLIENTS:
/// an address of an id no client has any more (and not one of a pod listed
/// by its IPv6 address) goes, with its flows; a client whose address there
/// is not its pod's gets its pod's.
#[test]
fn a_restarted_agent_keeps_only_the_ipv6_addresses_its_pods_hold() {
    let (mut h, mut table) = harness();
    let first: ClientSnapshot = [(CLIENT_IP.into(), pod("a", Some(CLIENT_IP6)))].into();
    table.apply(&mut h.datapath.maps, &first).unwrap();
    let id = table.clients()[&CLIENT_IP.into()].id;
    send6(&mut h, CLIENT_IP, CLIENT_IP6, 40_000).unwrap();
    // What a crash in the middle of a removal leaves: an address whose
    // client is gone.
    h.datapath.maps.add_client6(SECOND_CLIENT_IP6, id + 7).unwrap();

    let mut adopted = ClientTable::carried_over(&mut h.datapath.maps, &Default::default()).unwrap();
    assert_eq!(h.datapath.maps.client6_ids().unwrap(), [(CLIENT_IP6, id)].into(), "the stray address went");
    assert_eq!(h.flows6().len(), 1, "the client's own flow stays");

    // The snapshot says the pod at CLIENT_IP has another IPv6 address.
    let other: Ipv6Addr = "fd00:10:244:1::42".parse().unwrap();
    let now: ClientSnapshot = [(CLIENT_IP.into(), pod("a", Some(other)))].into();
    adopted.apply(&mut h.datapath.maps, &now).unwrap();
    assert_eq!(h.datapath.maps.client6_ids().unwrap(), [(other, id)].into());
    assert!(h.flows6().is_empty(), "the old address's bindings went with it");
    assert!(send6(&mut h, CLIENT_IP, CLIENT_IP6, 40_001).is_err());
    assert!(send6(&mut h, CLIENT_IP, other, 40_002).is_ok());
}

#[test]
fn idle_ipv6_bindings_are_swept_and_counted_with_ipv4_s() {
    let (mut h, mut table) = harness();
    let listed: ClientSnapshot = [(CLIENT_IP.into(), pod("a", Some(CLIENT_IP6)))].into();
    table.apply(&mut h.datapath.maps, &listed).unwrap();
    let mut cfg = h.datapath.maps.read_config().unwrap();
    cfg.udp_timeout_s = 30;
    h.datapath.maps.write_config(&cfg).unwrap();
    send6(&mut h, CLIENT_IP, CLIENT_IP6, 40_000).unwrap();
    h.run(&from_client(L4::Udp { src: 40_000, dst: 53 }, b"ask"));
    h.age_all(60);
    send6(&mut h, CLIENT_IP, CLIENT_IP6, 40_001).unwrap();

    let now = egress_agent::netdev::monotonic_ns();
    let step = Sweeper::default().step(&mut h.datapath.maps, now).unwrap();
    assert_eq!(step.removed, 2, "the idle IPv4 and IPv6 bindings");
    assert_eq!(step.tally.expect("a small table: a pass an interval").bindings(), 1, "the live one");
    assert_eq!(h.flows6().len(), 1);
    assert_eq!(h.reply_entries6(), 1, "the idle binding's reply half went too");
    assert!(h.flows().is_empty());
    assert_eq!(
        h.datapath.maps.client_flows(table.clients()[&CLIENT_IP.into()].id).unwrap(),
        1,
        "its share counts what it holds"
    );

    h.age_all(60);
    assert_eq!(sweep_expired(&mut h.datapath.maps, Halves::Both, now + 1).unwrap().0, 1);
    assert!(h.flows6().is_empty());
}
