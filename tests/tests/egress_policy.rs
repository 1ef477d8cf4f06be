//! Who may use the gateway and where to: unlisted clients and excluded
//! destinations are dropped and counted (fail closed), and pods file edits
//! apply promptly both ways.

mod common;

use std::time::Duration;

use common::*;
use egress_tests::agent::counters;
use egress_tests::clients::{self, curl_echo};

#[test]
fn an_unlisted_worker_gets_no_answer() {
    let s = start(options());
    let w2 = s.pod("w2");
    let before = s.status().unwrap().counter_or_zero(counters::DROP_UNKNOWN_CLIENT);

    let res = s.curl_from("w2", DROP_TIMEOUT);
    assert!(res.is_err(), "unlisted w2 got an answer: {res:?}");
    let res = clients::udp_echo(&w2.ns, s.udp_server(), DROP_TIMEOUT);
    assert!(res.is_err(), "unlisted w2 got a UDP answer: {res:?}");

    let after = s.counter(counters::DROP_UNKNOWN_CLIENT).unwrap();
    assert!(after > before, "{} stayed at {before}", counters::DROP_UNKNOWN_CLIENT);
    // Listed workers are unaffected.
    assert_eq!(s.curl_from("w1", OK_TIMEOUT).unwrap().ip, s.gateway_ip());
}

#[test]
fn an_excluded_destination_is_dropped() {
    let mut opts = options();
    let (allowed, excluded) = {
        let ips = &opts.cluster.outside.server_ips;
        assert!(ips.len() >= 2, "this test needs two outside server addresses");
        (ips[0], ips[1])
    };
    opts.exclude_cidrs = vec![format!("{excluded}/32")];
    let s = start(opts);
    let w1 = s.pod("w1");
    let before = s.status().unwrap().counter_or_zero(counters::DROP_EXCLUDED_DESTINATION);

    let res = curl_echo(&w1.ns, excluded, DROP_TIMEOUT);
    assert!(res.is_err(), "excluded destination {excluded} answered: {res:?}");
    let after = s.counter(counters::DROP_EXCLUDED_DESTINATION).unwrap();
    assert!(after > before, "{} stayed at {before}", counters::DROP_EXCLUDED_DESTINATION);

    assert_eq!(curl_echo(&w1.ns, allowed, OK_TIMEOUT).unwrap().ip, s.gateway_ip());
}

#[test]
fn pods_file_edits_apply_within_seconds() {
    /// The agent promises 2 s; allow for the probes' own time.
    const APPLY: Duration = Duration::from_secs(4);
    const PROBE: Duration = Duration::from_millis(700);
    let s = start(options());
    assert_eq!(s.curl_from("w1", OK_TIMEOUT).unwrap().ip, s.gateway_ip());

    // Remove w1: new connections stop.
    s.set_listed(&["w3"]).unwrap();
    let took = eventually("w1 cut off after removal from the pods file", APPLY, || {
        s.curl_from("w1", PROBE).is_err()
    });
    eprintln!("removal applied after {took:?}");
    let dropped = s.status().unwrap().counter_or_zero(counters::DROP_UNKNOWN_CLIENT);
    assert!(s.curl_from("w1", DROP_TIMEOUT).is_err(), "w1 still gets through after removal");
    assert!(s.counter(counters::DROP_UNKNOWN_CLIENT).unwrap() > dropped);
    assert_eq!(s.curl_from("w3", OK_TIMEOUT).unwrap().ip, s.gateway_ip(), "w3 must be unaffected");

    // Add it back: connections work again.
    s.set_listed(&["w1", "w3"]).unwrap();
    let took = eventually("w1 restored after re-adding it", APPLY, || {
        s.curl_from("w1", PROBE).map(|r| r.ip == s.gateway_ip()).unwrap_or(false)
    });
    eprintln!("re-adding applied after {took:?}");
}
