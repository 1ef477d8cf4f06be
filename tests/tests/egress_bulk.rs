//! Bulk TCP through the gateway in both directions (iperf3). Over veths the
//! kernel hands the program GSO super-packets, VXLAN-encapsulated ones
//! included, so this is what proves decap/encap keep GSO metadata valid;
//! pings and short requests would not.

mod common;

use common::*;
use egress_tests::clients::{self, mbit};

/// Far below what veths do (gigabits), far above what a broken GSO path
/// (retransmission storms, fallbacks to tiny segments) manages.
const MIN_BITS_PER_SECOND: f64 = 50e6;
const SECONDS: u32 = 3;

fn bulk(reverse: bool) {
    let s = start(options());
    let _iperf = clients::start_iperf3_server(s.cluster.outside(), s.server_ip()).unwrap();
    let w1 = s.pod("w1");
    let t = clients::iperf3(&w1.ns, s.server_ip(), SECONDS, reverse).unwrap();
    let dir = if reverse { "download (-R)" } else { "upload" };
    eprintln!("{dir}: {} (retransmits {:?})", mbit(t.bits_per_second), t.retransmits);
    assert!(
        t.bits_per_second > MIN_BITS_PER_SECOND,
        "{dir} through the gateway: {} is below {}",
        mbit(t.bits_per_second),
        mbit(MIN_BITS_PER_SECOND)
    );
    // The transfer went through the gateway, not around it.
    let status = s.status().unwrap();
    assert!(status.flows_of(w1.ip, "tcp").any(|f| f.remote_ip == s.server_ip()));
}

#[test]
fn bulk_tcp_upload() {
    bulk(false);
}

#[test]
fn bulk_tcp_download() {
    bulk(true);
}

/// Reads one counter of `nstat` in a namespace (absolute value).
fn nstat(ns: &egress_tests::Netns, name: &str) -> u64 {
    let out = ns.exec(&["nstat", "-az", name]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.split_whitespace().next()?.parse().ok()))
        .unwrap_or(0)
}

/// A real NIC without tunnel offloads makes the kernel segment our
/// decapsulated GSO packets in software on the way out: the headers we
/// left must still describe the packet exactly. Here the gateway node's
/// uplink has every segmentation offload turned off; the same-node worker
/// w3 is used because its tunnel packets reach the gateway unsegmented.
#[test]
fn bulk_tcp_survives_software_segmentation_on_the_uplink() {
    let s = start(options());
    let node = &s.cluster.node(s.cluster.gateway().node).ns;
    node.exec(&[
        "ethtool",
        "-K",
        egress_tests::topology::NODE_EXTERNAL,
        "tso",
        "off",
        "gso",
        "off",
        "tx-udp_tnl-segmentation",
        "off",
        "tx-udp_tnl-csum-segmentation",
        "off",
    ])
    .unwrap();
    let _iperf = clients::start_iperf3_server(s.cluster.outside(), s.server_ip()).unwrap();
    let outside = s.cluster.outside();
    let (csum_before, hdr_before) = (nstat(outside, "TcpInCsumErrors"), nstat(outside, "IpInHdrErrors"));
    let t = clients::iperf3(&s.pod("w3").ns, s.server_ip(), SECONDS, false).unwrap();
    eprintln!(
        "upload with software segmentation: {} (retransmits {:?})",
        mbit(t.bits_per_second),
        t.retransmits
    );
    assert!(t.bits_per_second > MIN_BITS_PER_SECOND, "{}", mbit(t.bits_per_second));
    assert_eq!(nstat(outside, "TcpInCsumErrors"), csum_before, "segments with bad TCP checksums");
    assert_eq!(nstat(outside, "IpInHdrErrors"), hdr_before, "segments with bad IP headers");
    let forwarded = s.counter("forwarded_to_remote").unwrap();
    assert!(forwarded > 1000, "the transfer went through the gateway ({forwarded} packets)");
}
