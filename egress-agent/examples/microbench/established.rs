//! The established fast path, both directions, on one open flow: what every
//! packet of a long-lived connection costs.
//!
//! Each packet is run once per call (see `timing` for why `repeat` cannot be
//! used on a packet the program rewrites) and its duration corrected by the
//! calibrated clock overhead. A `repeat` run of the same packet is shown as
//! well, with the counters that prove what it really measured.
use std::path::Path;

use anyhow::{ensure, Result};
use egress_agent::datapath::loader::Datapath;
use egress_common::maps::CT_MAX_DEFAULT;

use crate::{
    common::TC_ACT_REDIRECT,
    datapath::{self, counter},
    flows::{nat_port_of, Flow},
    report::Report,
    timing::{run, run_each_on, run_expecting, Calibration, Program, Stats},
};

/// Repetitions of the deliberately naive `repeat` run.
const NAIVE_REPEAT: u32 = 1_000_000;
const WARM_UP_RUNS: usize = 1_000;

pub fn measure(
    report: &mut Report,
    calibration: &Calibration,
    runs: usize,
    object: Option<&Path>,
) -> Result<()> {
    let mut dp = datapath::fresh(CT_MAX_DEFAULT, object)?;
    let (to_remote, to_client) = open_one(&mut dp)?;

    for (direction, work, floor_work, packet) in [
        ("client→remote", "decap, conntrack hit, SNAT", "decap, redirect", &to_remote),
        ("remote→client", "conntrack hit, reverse NAT, encap", "encap, redirect", &to_client),
    ] {
        let what = format!("established {direction} ({work})");
        let established =
            time_forwarded(report, calibration, &mut dp, Program::Gateway, &what, packet, runs)?;
        let what = format!("floor {direction}, the tunnel alone ({floor_work})");
        let floor = time_forwarded(report, calibration, &mut dp, Program::TunnelFloor, &what, packet, runs)?;
        report.add(
            format!("  = established ÷ floor, {direction}: medians"),
            established.median / floor.median,
            "×",
        );
    }

    for (label, packet) in [("client→remote", &to_remote), ("remote→client", &to_client)] {
        let forwarded_before = forwarded(&dp)?;
        let passed_before = counter(&dp, "passed_to_stack")?;
        let naive = run(&mut dp, packet, NAIVE_REPEAT)?;
        let forwarded_runs = forwarded(&dp)? - forwarded_before;
        let passed_runs = counter(&dp, "passed_to_stack")? - passed_before;
        // The first repetition translates the packet in place; the rest see
        // the translated packet, which is no longer for the gateway.
        ensure!(
            forwarded_runs == 1 && passed_runs == NAIVE_REPEAT as u64 - 1,
            "naive repeat of the {label} packet: {forwarded_runs} forwarded, {passed_runs} passed \
             (expected 1 and {}): the kernel's repeat semantics changed, revisit the method",
            NAIVE_REPEAT - 1
        );
        report.add(
            format!("naive repeat=1e6 of the {label} packet (1 translation + 999999 passes of its output)"),
            naive.duration_ns as f64,
            "ns/packet",
        );
    }
    Ok(())
}

/// Times `packet`, which `program` forwards, run after run (each on a
/// fresh copy, after a warm-up): median, mean and p99 as `what`'s rows.
pub fn time_forwarded(
    report: &mut Report,
    calibration: &Calibration,
    dp: &mut Datapath,
    program: Program,
    what: &str,
    packet: &[u8],
    runs: usize,
) -> Result<Stats> {
    run_each_on(dp, program, std::iter::repeat_n(packet, WARM_UP_RUNS), TC_ACT_REDIRECT, what)?;
    let mut durations = run_each_on(dp, program, std::iter::repeat_n(packet, runs), TC_ACT_REDIRECT, what)?;
    let stats = Stats::of(&mut durations).minus(calibration.overhead_ns());
    report.add(format!("{what}: median"), stats.median, "ns/packet");
    report.add(format!("{what}: mean"), stats.mean, "ns/packet");
    report.add(format!("{what}: p99"), stats.p99, "ns/packet");
    Ok(stats)
}

/// Opens one TCP flow (SYN, SYN-ACK) and returns a data segment of it in
/// each direction: client -> remote (tunnelled), remote -> client.
pub fn open_one(dp: &mut Datapath) -> Result<(Vec<u8>, Vec<u8>)> {
    let flow = Flow::spread(0);
    let opened = run_expecting(dp, &flow.syn(), TC_ACT_REDIRECT, "the flow's SYN")?;
    let nat_port = nat_port_of(&opened.packet)?;
    run_expecting(dp, &flow.syn_ack(nat_port), TC_ACT_REDIRECT, "the SYN-ACK")?;
    Ok((flow.data_to_remote(), flow.data_to_client(nat_port)))
}

fn forwarded(dp: &Datapath) -> Result<u64> {
    Ok(counter(dp, "forwarded_to_remote")? + counter(dp, "forwarded_to_client")?)
}
