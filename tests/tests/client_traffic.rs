//! Per-client traffic counters under bulk TCP, read where an operator reads
//! them: `egress_client_packets` and `egress_client_bytes` on /metrics.
//!
//! The packet scenarios (egress-agent/tests/prog_accounting.rs) pin the
//! exact numbers for single packets, but BPF_PROG_TEST_RUN cannot build a
//! GSO skb. Over veths the program gets GSO super-packets in both
//! directions, and each must count as the segments it leaves as on the
//! wire, not as one packet of tens of kilobytes.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::*;
use egress_tests::{clients, EgressSetup};

const SECONDS: u32 = 2;
/// Far less than 2 s of iperf3 over veths moves; enough for GSO to be used.
const MIN_BYTES: u64 = 10_000_000;

/// The /metrics page, fetched inside the gateway pod.
fn scrape(s: &EgressSetup) -> String {
    clients::curl(&s.cluster.gateway().ns, "http://127.0.0.1:9090/metrics", OK_TIMEOUT).unwrap()
}

/// `family{client="IP",...,direction="D"} N` from a scrape.
fn series(metrics: &str, family: &str, client: Ipv4Addr, direction: &str) -> u64 {
    let client = format!("client=\"{client}\"");
    let direction = format!("direction=\"{direction}\"");
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(&client) && l.contains(&direction))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {family} series for {client} {direction} in:\n{metrics}"))
}

/// (packets, bytes) of `client` in `direction`, once the agent's sample
/// (taken every second with `--gc-interval-s 1`) has caught up with the
/// finished transfer: two scrapes a sample period apart agree.
fn settled_traffic(s: &EgressSetup, client: Ipv4Addr, direction: &str) -> (u64, u64) {
    let read = || {
        let m = scrape(s);
        (
            series(&m, "egress_client_packets_total", client, direction),
            series(&m, "egress_client_bytes_total", client, direction),
        )
    };
    let mut last = read();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(1200));
        let now = read();
        if now == last && now.1 > 0 {
            return now;
        }
        last = now;
    }
    panic!("the {direction} traffic of {client} did not settle: last {last:?}");
}

fn bulk_counts_wire_packets(worker: &str, other: &str, reverse: bool) {
    let mut opts = options();
    opts.extra_args = vec!["--gc-interval-s".into(), "1".into()];
    let s = start(opts);
    let _iperf = clients::start_iperf3_server(s.cluster.outside(), s.server_ip()).unwrap();
    let w1 = s.pod(worker);
    // No inner IPv4 packet on the wire is larger than the tunnel device's
    // MTU: the worker's egress0 going out, the client's MSS coming back.
    let out = w1.ns.exec(&["cat", "/sys/class/net/egress0/mtu"]).unwrap();
    let tunnel_mtu: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();

    clients::iperf3(&w1.ns, s.server_ip(), SECONDS, reverse).unwrap();
    let direction = if reverse { "to_client" } else { "to_remote" };
    let (packets, bytes) = settled_traffic(&s, w1.ip, direction);
    eprintln!("{direction}: {packets} packets, {bytes} bytes ({} bytes a packet)", bytes / packets.max(1));
    assert!(bytes >= MIN_BYTES, "{direction}: only {bytes} bytes counted for a bulk transfer");
    assert!(
        bytes <= packets * tunnel_mtu,
        "{direction}: {bytes} bytes in {packets} packets is {} bytes a packet, more than the \
         tunnel MTU {tunnel_mtu}: GSO super-packets were counted as one packet",
        bytes / packets.max(1)
    );
    // The other listed client sent nothing and got nothing.
    let w3 = s.pod(other).ip;
    let m = scrape(&s);
    for d in ["to_remote", "to_client"] {
        assert_eq!(series(&m, "egress_client_packets_total", w3, d), 0, "w3 {d} packets");
        assert_eq!(series(&m, "egress_client_bytes_total", w3, d), 0, "w3 {d} bytes");
    }
}

#[test]
fn bulk_upload_counts_segments_not_super_packets() {
    bulk_counts_wire_packets("w3", "w1", false);
}

#[test]
fn bulk_download_counts_segments_not_super_packets() {
    bulk_counts_wire_packets("w1", "w3", true);
}
