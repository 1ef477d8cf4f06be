//! The agent's conntrack sweep, against maps the real program filled.
mod common;

use common::*;
use egress_agent::datapath::conntrack::sweep_expired;

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
    assert_eq!(sweep_expired(&mut h.datapath.maps, now()).unwrap(), 1);
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
    sweep_expired(&mut h.datapath.maps, now()).unwrap();
    assert!(h.flows().is_empty(), "the expired original half is gone");
    assert_eq!(h.datapath.maps.ct_reply.get(&reply_key, 0).unwrap(), newer, "the live binding's half stays");
}
