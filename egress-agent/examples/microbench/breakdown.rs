//! Where the established path's time goes, from the real program alone:
//! packets that leave it at successive points of the same code. Each one
//! does a prefix of what an established packet does, so the differences
//! between rows (and against the established rows) price the steps between
//! those points.
use std::{net::Ipv4Addr, path::Path};

use anyhow::Result;
use egress_common::{config::TUNNEL_GATEWAY_MAC, maps::CT_MAX_DEFAULT};

use crate::{
    common::{
        frame, from_remote, tcp_ack, tunnel, CLIENT_IP, CLIENT_MAC, EXCLUDED_CIDR, OTHER_POD_IP, REMOTE_IP,
        TC_ACT_SHOT, TC_ACT_UNSPEC, VNI,
    },
    datapath,
    flows::{untouched_frame, PAYLOAD},
    report::Report,
    timing::{run, run_each, Calibration, Stats},
};

/// A NAT port no flow holds in a fresh datapath.
const UNBOUND_NAT_PORT: u16 = 20_000;

pub fn measure(
    report: &mut Report,
    calibration: &Calibration,
    runs: usize,
    object: Option<&Path>,
) -> Result<()> {
    let mut dp = datapath::fresh(CT_MAX_DEFAULT, object)?;
    let excluded_remote = Ipv4Addr::from(u32::from(EXCLUDED_CIDR.0) + 10);
    let from_unlisted = {
        let inner =
            frame(CLIENT_MAC, TUNNEL_GATEWAY_MAC, OTHER_POD_IP, REMOTE_IP, 64, tcp_ack(40_000, 443), PAYLOAD);
        tunnel(OTHER_POD_IP, VNI, &inner)
    };
    let to_excluded = {
        let inner = frame(
            CLIENT_MAC,
            TUNNEL_GATEWAY_MAC,
            CLIENT_IP,
            excluded_remote,
            64,
            tcp_ack(40_000, 443),
            PAYLOAD,
        );
        tunnel(CLIENT_IP, VNI, &inner)
    };
    let cases: [(&str, Vec<u8>, u32); 5] = [
        ("pass: not IPv4 (config lookup, ethertype)", untouched_frame(), TC_ACT_UNSPEC),
        ("pass: TCP to the gateway, not a NAT port (+ IPv4 and port parse)", from_remote(tcp_ack(443, 80), PAYLOAD), TC_ACT_UNSPEC),
        ("drop: reply to an unbound NAT port (+ CT_REPLY miss, counter)", from_remote(tcp_ack(443, UNBOUND_NAT_PORT), PAYLOAD), TC_ACT_SHOT),
        ("drop: tunnel packet from an unlisted pod (+ CLIENTS miss, counter)", from_unlisted.clone(), TC_ACT_SHOT),
        ("drop: listed client to an excluded destination (+ CLIENTS hit, VXLAN and inner parse, LPM lookup)", to_excluded, TC_ACT_SHOT),
    ];
    for (label, packet, action) in cases {
        run_each(&mut dp, std::iter::repeat_n(packet.as_slice(), 1_000), action, label)?;
        let mut durations = run_each(&mut dp, std::iter::repeat_n(packet.as_slice(), runs), action, label)?;
        let stats = Stats::of(&mut durations).minus(calibration.overhead_ns());
        report.add(format!("{label}: median"), stats.median, "ns/packet");
    }
    // The same checks through `repeat`, valid here because these packets
    // are not modified: a cross-check of the clock calibration.
    let repeated = run(&mut dp, &from_unlisted, 1_000_000)?;
    report.add(
        "drop: tunnel packet from an unlisted pod, repeat=1e6 (cross-check)",
        repeated.duration_ns as f64,
        "ns/packet",
    );
    Ok(())
}
