//! A server that closes first (HTTP with `Connection: close`) holds
//! TIME_WAIT for 60 s on the gateway's NAT port tuple. Handed to another
//! client meanwhile, that port carries a SYN whose TCP timestamps have
//! nothing to do with the last connection's, and Linux refuses it (PAWS,
//! counted as PAWSTimewait); the client waits a second and retransmits.
//! The gateway keeps such ports for `--tcp-time-wait-timeout-s`.
//!
//! Both runs release ports of flows the client closed first after 2 s (the
//! shortest timeout the agent takes), and run short connections for 4 s
//! with NAT ports 10240-32767: below the client's own ephemeral ports, so
//! no flow keeps its client's port and every NAT port is drawn at random,
//! 22,528 of them for some 35,000 connections, reused within the run. (With
//! the default range a flow keeps its client's port, so a NAT tuple comes
//! back only with the same client tuple, whose newer timestamps the
//! server's TIME_WAIT accepts: nothing here would be tested.)

mod common;

use std::net::SocketAddrV4;

use common::*;
use egress_common::maps::CT_MAX_DEFAULT;
use egress_tests::load::{conn_rate, start_conn_server, CONN_RATE_PORT, CONN_RATE_PORTS};

/// Short connections through the gateway with `time_wait_s` as the
/// TIME_WAIT timeout; returns (connections, failed, the server's
/// PAWSTimewait, the client's retransmitted SYNs, flows held in time-wait).
fn short_connections(time_wait_s: u32) -> (u64, u64, u64, u64, usize) {
    let mut opts = options();
    for (flag, value) in [
        ("--tcp-closing-timeout-s", "2".to_string()),
        ("--tcp-time-wait-timeout-s", time_wait_s.to_string()),
        ("--gc-interval-s", "1".to_string()),
        ("--nat-ports", "10240-32767".to_string()),
        // One client holds every port in TIME_WAIT: the whole table is its.
        ("--max-flows-per-client", CT_MAX_DEFAULT.to_string()),
    ] {
        opts.extra_args.extend([flag.to_string(), value]);
    }
    let s = start(opts);
    let server = SocketAddrV4::new(s.server_ip(), CONN_RATE_PORT);
    let outside = s.cluster.outside().clone();
    let _server = start_conn_server(&outside, server, CONN_RATE_PORTS).unwrap();
    let client = &s.pod("w1").ns;
    let counter =
        |ns: &egress_tests::Netns, name: &str| ns.tcp_ext_counters().unwrap().get(name).copied().unwrap_or(0);
    let (paws, syn_retrans) = (counter(&outside, "PAWSTimewait"), counter(client, "TCPSynRetrans"));
    let r = conn_rate(client, server, CONN_RATE_PORTS, 4, 4.0, None).unwrap();
    let paws = counter(&outside, "PAWSTimewait") - paws;
    let syn_retrans = counter(client, "TCPSynRetrans") - syn_retrans;
    let time_wait = s.status().unwrap().flows.iter().filter(|f| f.state == "time-wait").count();
    eprintln!(
        "TIME_WAIT timeout {time_wait_s} s: {} connections ({} failed, {:.0}/s), server PAWSTimewait {paws}, \
         client SYN retransmissions {syn_retrans}, flows in time-wait {time_wait}",
        r.connections, r.errors, r.per_second
    );
    (r.connections, r.errors, paws, syn_retrans, time_wait)
}

#[test]
fn ports_the_server_holds_in_time_wait_are_not_reused() {
    let (connections, failed, paws, _, time_wait) = short_connections(70);
    assert!(connections > 2000, "only {connections} short connections in 4 s");
    assert_eq!(failed, 0);
    assert_eq!(paws, 0, "the server refused SYNs on NAT ports it still held in TIME_WAIT");
    assert!(time_wait as u64 * 10 >= connections * 9, "{time_wait} of {connections} flows held in time-wait");
}

/// The control: released after 2 s, the same ports are refused. Without it
/// the test above could pass on a kernel that never refuses them.
#[test]
fn ports_released_early_are_refused_by_the_server_s_time_wait() {
    let (connections, _, paws, syn_retrans, _) = short_connections(2);
    assert!(connections > 0);
    assert!(paws > 0, "the server accepted every reused port: the test above proves nothing here");
    assert!(syn_retrans > 0);
}
