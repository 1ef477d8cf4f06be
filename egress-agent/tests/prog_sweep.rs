//! The agent's conntrack sweep, against maps the real program filled.
mod common;

use common::*;
use egress_agent::datapath::{
    conntrack::{flows, sweep_expired, Halves},
    sweeper::{Sweeper, REPLY_HALVES_EVERY},
};
use egress_common::conntrack::NatEntry;

/// The default harness with a 1 s UDP timeout.
fn harness() -> Harness {
    let mut h = Harness::default();
    let mut cfg = config((20_000, 20_099));
    cfg.udp_timeout_s = 1;
    h.datapath.maps.write_config(&cfg).unwrap();
    h
}

/// Makes every entry in both halves look last seen at boot: expired under
/// the 1 s UDP timeout on any machine up for more than a second (a VM that
/// just booted included; `last_seen_ns` counts from boot).
fn expire_all(h: &mut Harness) {
    for map in [&mut h.datapath.maps.ct_original, &mut h.datapath.maps.ct_reply] {
        let entries: Vec<_> = map.iter().filter_map(|r| r.ok()).collect();
        for (key, mut entry) in entries {
            entry.last_seen_ns = 0;
            map.insert(key, entry, 0).unwrap();
        }
    }
}

fn now() -> u64 {
    egress_agent::netdev::monotonic_ns()
}

#[test]
fn sweep_removes_expired_flows_and_keeps_live_ones() {
    let mut h = harness();
    h.run(&from_client(L4::Udp { src: 5000, dst: 53 }, b""));
    expire_all(&mut h);
    h.run(&from_client(L4::Udp { src: 5001, dst: 53 }, b""));
    assert_eq!(sweep_expired(&mut h.datapath.maps, Halves::Both, now()).unwrap().0, 1);
    let flows = h.flows();
    assert_eq!(flows.len(), 1);
    assert_eq!(u16::from_be(flows[0].client_port_be), 5001);
    assert_eq!(h.reply_entries(), 1, "the expired flow's reply half went too");
}

#[test]
fn sweep_never_deletes_another_binding_s_half() {
    let mut h = harness();
    h.run(&from_client(L4::Udp { src: 5000, dst: 53 }, b""));
    expire_all(&mut h);
    // The expired flow's reply tuple now belongs to a newer, live binding.
    let reply_key = h.datapath.maps.ct_reply.keys().next().unwrap().unwrap();
    let mut newer = h.datapath.maps.ct_reply.get(&reply_key, 0).unwrap();
    newer.client_port_be = 6000u16.to_be();
    newer.last_seen_ns = now();
    h.datapath.maps.ct_reply.insert(reply_key, newer, 0).unwrap();
    sweep_expired(&mut h.datapath.maps, Halves::Both, now()).unwrap();
    assert!(h.flows().is_empty(), "the expired original half is gone");
    assert_eq!(h.datapath.maps.ct_reply.get(&reply_key, 0).unwrap(), newer, "the live binding's half stays");
}

/// The agent reads the maps in batches of a few thousand entries: every
/// flow is seen across the batches' seams, by the listing, by the sweep's
/// tally of what stays, and by the sweep when all have expired.
#[test]
fn the_batched_walks_see_every_flow() {
    const FLOWS: u16 = 10_000;
    let mut h = Harness::with_table((10_000, 60_000), 16_384);
    for port in 20_000..20_000 + FLOWS {
        assert_eq!(h.run(&from_client(L4::Udp { src: port, dst: 53 }, b"")).action, TC_ACT_REDIRECT);
    }
    h.run(&from_client(L4::EchoRequest { id: 7 }, b"ping"));
    assert_eq!(flows::<NatEntry>(&h.datapath.maps).unwrap().len(), FLOWS as usize + 1);

    let (removed, kept) = sweep_expired(&mut h.datapath.maps, Halves::Both, now()).unwrap();
    assert_eq!(removed, 0);
    assert_eq!(kept.bindings(), FLOWS as u64 + 1);
    assert_eq!((kept.by_protocol["udp"], kept.by_protocol["icmp"]), (FLOWS as u64, 1));
    assert_eq!(kept.most_towards_one_destination(), FLOWS as u64, "all UDP flows go to one server");

    let mut cfg = h.datapath.maps.read_config().unwrap();
    cfg.udp_timeout_s = 1;
    cfg.icmp_timeout_s = 1;
    h.datapath.maps.write_config(&cfg).unwrap();
    expire_all(&mut h);
    // The original halves lead to the reply halves: one walk takes both.
    let (removed, kept) = sweep_expired(&mut h.datapath.maps, Halves::Originals, now()).unwrap();
    assert_eq!((removed, kept.bindings()), (FLOWS as usize + 1, 0));
    assert!(h.flows().is_empty());
    assert_eq!(h.reply_entries(), 0);
}

/// A reply half left without its original (a datapath race) holds a NAT
/// port: the sweeps that walk the reply halves find it, the others do not
/// see it.
#[test]
fn a_stray_reply_half_goes_with_the_sweep_of_both_halves() {
    let mut h = harness();
    h.run(&from_client(L4::Udp { src: 5000, dst: 53 }, b""));
    expire_all(&mut h);
    let original = h.datapath.maps.ct_original.keys().next().unwrap().unwrap();
    h.datapath.maps.ct_original.remove(&original).unwrap();
    assert_eq!(sweep_expired(&mut h.datapath.maps, Halves::Originals, now()).unwrap().0, 0);
    assert_eq!(h.reply_entries(), 1, "not seen from the original halves");
    sweep_expired(&mut h.datapath.maps, Halves::Both, now()).unwrap();
    assert_eq!(h.reply_entries(), 0, "the stray reply half went");
}

/// On a large table each interval reads a slice and the next carries on
/// from there: every flow is tallied once a pass, and every expired flow
/// goes, both halves, whichever part of a pass the sweep was in.
#[test]
fn a_large_table_is_swept_a_slice_an_interval() {
    const FLOWS: u16 = 10_000;
    let mut h = Harness::with_table((10_000, 60_000), 16_384);
    for port in 20_000..20_000 + FLOWS {
        assert_eq!(h.run(&from_client(L4::Udp { src: port, dst: 53 }, b"")).action, TC_ACT_REDIRECT);
    }
    let mut sweeper = Sweeper::with_slice(4_096);
    let mut intervals = 0;
    let kept = loop {
        intervals += 1;
        assert!(intervals <= 5, "no pass ended in {intervals} intervals");
        let step = sweeper.step(&mut h.datapath.maps, now()).unwrap();
        assert_eq!(step.removed, 0, "nothing has expired");
        if let Some(kept) = step.tally {
            break kept;
        }
    };
    // A slice reads whole chunks until it has 4,096 (less than 8,192 in
    // all): 10,000 flows take two slices at least.
    assert!(intervals >= 2, "10,000 flows in {intervals} slices of 4,096");
    assert_eq!(kept.bindings(), FLOWS as u64, "each flow tallied once in the pass");

    let mut cfg = h.datapath.maps.read_config().unwrap();
    cfg.udp_timeout_s = 1;
    h.datapath.maps.write_config(&cfg).unwrap();
    expire_all(&mut h);
    let mut removed = 0;
    for interval in 1.. {
        assert!(interval <= 12, "no pass after the expiry ended with nothing kept");
        let step = sweeper.step(&mut h.datapath.maps, now()).unwrap();
        removed += step.removed;
        if step.tally.is_some_and(|kept| kept.bindings() == 0) {
            break;
        }
    }
    assert_eq!(removed, FLOWS as usize);
    assert!(h.flows().is_empty());
    assert_eq!(h.reply_entries(), 0);
}

/// The reply halves are walked after the first pass over the originals
/// and after every REPLY_HALVES_EVERY-th: a stray reply half made after
/// the first waits for the seventh.
#[test]
fn the_slices_walk_the_reply_halves_once_in_so_many_passes() {
    let mut h = harness();
    let mut sweeper = Sweeper::default();
    h.run(&from_client(L4::Udp { src: 5000, dst: 53 }, b""));
    assert!(
        sweeper.step(&mut h.datapath.maps, now()).unwrap().tally.is_some(),
        "a small table: a pass an interval"
    );
    expire_all(&mut h);
    let original = h.datapath.maps.ct_original.keys().next().unwrap().unwrap();
    h.datapath.maps.ct_original.remove(&original).unwrap();
    for pass in 2..=REPLY_HALVES_EVERY {
        assert!(sweeper.step(&mut h.datapath.maps, now()).unwrap().tally.is_some());
        assert_eq!(h.reply_entries(), 1, "pass {pass} reads the original halves only");
    }
    sweeper.step(&mut h.datapath.maps, now()).unwrap();
    assert_eq!(h.reply_entries(), 0, "the stray reply half went at pass {}", REPLY_HALVES_EVERY + 1);
}
