//! The new-flow path: conntrack miss, NAT port allocation, two NOEXIST
//! inserts, then the same rewrite as an established packet.
//!
//! A packet creates its flow only once, so `repeat` cannot time it: every
//! flow here is a distinct packet (another client port or destination) run
//! once, and the durations of those single runs are summarized.
use std::path::Path;

use anyhow::{bail, Result};
use egress_agent::datapath::loader::Datapath;
use egress_common::{
    config::{DEFAULT_NAT_PORT_MAX, DEFAULT_NAT_PORT_MIN},
    maps::CT_MAX_DEFAULT,
    ports::range_len,
};

use crate::{
    common::{GATEWAY_IP, REMOTE_IP, TC_ACT_REDIRECT, TC_ACT_SHOT},
    datapath::{self, counter},
    flows::Flow,
    report::Report,
    timing::{run, run_each, Calibration, Stats},
};

/// New flows spread over many destinations, into empty maps.
pub fn measure(
    report: &mut Report,
    calibration: &Calibration,
    flows: u32,
    object: Option<&Path>,
) -> Result<()> {
    let mut dp = datapath::fresh(CT_MAX_DEFAULT, object)?;
    let packets: Vec<Vec<u8>> = (0..flows).map(|i| Flow::spread(i).syn()).collect();
    let mut durations =
        run_each(&mut dp, packets.iter().map(Vec::as_slice), TC_ACT_REDIRECT, "a new flow's SYN")?;
    let created = counter(&dp, "flow_created")?;
    if created != flows as u64 {
        bail!("{flows} SYNs created {created} flows");
    }
    let stats = Stats::of(&mut durations).minus(calibration.overhead_ns());
    let label = format!("new flow (TCP SYN; {}k distinct flows into empty maps)", flows / 1000);
    report.add(format!("{label}: median"), stats.median, "ns/packet");
    report.add(format!("{label}: mean"), stats.mean, "ns/packet");
    report.add(format!("{label}: p99"), stats.p99, "ns/packet");
    Ok(())
}

/// New flows to one destination whose NAT ports are already partly taken:
/// each attempt is a NOEXIST insert that may collide, and after
/// `--port-retries` (16) collisions the flow is dropped as exhausted.
/// Each probe flow is removed again after it is measured, so the occupancy
/// stays where it was set.
pub fn measure_crowded(
    report: &mut Report,
    calibration: &Calibration,
    occupancies_percent: &[u32],
    probes: u32,
    object: Option<&Path>,
) -> Result<()> {
    let mut dp = datapath::fresh(CT_MAX_DEFAULT, object)?;
    let ports = range_len(DEFAULT_NAT_PORT_MIN, DEFAULT_NAT_PORT_MAX);
    let mut next_flow = 0u32;
    let mut bound = 0u32;
    for &percent in occupancies_percent {
        let target = ports * percent / 100;
        while bound < target {
            let syn = Flow::to_one_destination(REMOTE_IP, next_flow).syn();
            next_flow += 1;
            if run(&mut dp, &syn, 1)?.action == TC_ACT_REDIRECT {
                bound += 1;
            }
        }
        let mut durations = Vec::with_capacity(probes as usize);
        let mut exhausted = 0u32;
        for _ in 0..probes {
            let flow = Flow::to_one_destination(REMOTE_IP, next_flow);
            next_flow += 1;
            let result = run(&mut dp, &flow.syn(), 1)?;
            durations.push(result.duration_ns);
            match result.action {
                TC_ACT_REDIRECT => remove_flow(&mut dp, &flow)?,
                TC_ACT_SHOT => exhausted += 1,
                other => bail!("a probe SYN returned {}", other as i32),
            }
        }
        let stats = Stats::of(&mut durations).minus(calibration.overhead_ns());
        let label = format!("new flow to one destination with {percent}% of its {ports} NAT ports taken");
        report.add(format!("{label}: mean"), stats.mean, "ns/packet");
        report.add(format!("{label}: dropped as exhausted"), 100.0 * exhausted as f64 / probes as f64, "%");
    }
    Ok(())
}

/// Removes both conntrack halves of `flow`, as the sweep would.
fn remove_flow(dp: &mut Datapath, flow: &Flow) -> Result<()> {
    let original = flow.original_tuple();
    let entry = dp.maps.ct_original.get(&original, 0)?;
    dp.maps.ct_original.remove(&original)?;
    dp.maps.ct_reply.remove(&entry.reply_tuple(u32::from(GATEWAY_IP).to_be()))?;
    Ok(())
}
