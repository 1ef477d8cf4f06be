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

/// Whether `dev` exists in the gateway pod.
fn gateway_has_link(s: &egress_tests::EgressSetup, dev: &str) -> bool {
    s.cluster.gateway().ns.exec(&["ip", "link", "show", "dev", dev]).is_ok()
}

/// A cross-node upload reaches the gateway as MTU-sized tunnel packets (the
/// gateway node's bridge segments them). The GRO stage must merge them
/// again, deliver them intact, and leave the pod as it found it.
#[test]
fn gro_stage_merges_a_cross_node_upload() {
    let mut s = start(options());
    assert!(gateway_has_link(&s, "egressgro-rx"), "the agent set up the GRO stage");
    let _iperf = clients::start_iperf3_server(s.cluster.outside(), s.server_ip()).unwrap();
    let outside = s.cluster.outside();
    let csum_before = nstat(outside, "TcpInCsumErrors");
    let t = clients::iperf3(&s.pod("w1").ns, s.server_ip(), SECONDS, false).unwrap();
    let (into, out_of) = (s.counter("gro_stage_in").unwrap(), s.counter("gro_stage_out").unwrap());
    eprintln!("cross-node upload: {} ; gro_stage_in {into}, gro_stage_out {out_of}", mbit(t.bits_per_second));
    assert!(t.bits_per_second > MIN_BITS_PER_SECOND, "{}", mbit(t.bits_per_second));
    assert_eq!(nstat(outside, "TcpInCsumErrors"), csum_before, "merged segments with bad TCP checksums");
    assert!(into > 10_000, "the upload's segments went through the stage ({into})");
    // Without GRO every segment would come out on its own (out == in).
    assert!(
        out_of * 4 < into,
        "GRO merged at least 4 segments per packet on average ({into} in, {out_of} out)"
    );
    s.agent.terminate().unwrap();
    assert!(!gateway_has_link(&s, "egressgro-tx"), "the agent removed the GRO stage on exit");
}

/// The same-node worker's tunnel packets arrive as GSO packets already:
/// they go straight out, and so do short request/response exchanges.
#[test]
fn gro_stage_leaves_gso_and_small_packets_alone() {
    let s = start(options());
    let _iperf = clients::start_iperf3_server(s.cluster.outside(), s.server_ip()).unwrap();
    let t = clients::iperf3(&s.pod("w3").ns, s.server_ip(), SECONDS, false).unwrap();
    assert!(t.bits_per_second > MIN_BITS_PER_SECOND, "{}", mbit(t.bits_per_second));
    for _ in 0..20 {
        s.curl_from("w1", OK_TIMEOUT).unwrap();
    }
    let (into, forwarded) = (s.counter("gro_stage_in").unwrap(), s.counter("forwarded_to_remote").unwrap());
    eprintln!("same-node upload and requests: forwarded_to_remote {forwarded}, gro_stage_in {into}");
    assert!(forwarded > 1000, "the traffic went through the gateway ({forwarded})");
    // A flow may send a few full segments before its first GSO packet.
    assert!(into * 20 < forwarded, "only a few packets took the stage ({into} of {forwarded})");
}

/// `--no-gro-stage`: no pair in the pod, nothing sent into it, uploads work.
#[test]
fn no_gro_stage_sends_everything_straight_out() {
    let s = start(egress_tests::GatewayOptions { extra_args: vec!["--no-gro-stage".into()], ..options() });
    assert!(!gateway_has_link(&s, "egressgro-rx"));
    let _iperf = clients::start_iperf3_server(s.cluster.outside(), s.server_ip()).unwrap();
    let t = clients::iperf3(&s.pod("w1").ns, s.server_ip(), SECONDS, false).unwrap();
    assert!(t.bits_per_second > MIN_BITS_PER_SECOND, "{}", mbit(t.bits_per_second));
    assert_eq!(s.counter("gro_stage_in").unwrap(), 0);
    assert!(s.counter("forwarded_to_remote").unwrap() > 1000);
}
