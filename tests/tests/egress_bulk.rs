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
