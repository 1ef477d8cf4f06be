//! Conntrack at 10k, 100k and 1M live flows.
//!
//! The maps are filled through the program's own new-flow path (one SYN per
//! flow, each run once), so the fill itself gives the insert cost at each
//! level. At each level a random sample of the live flows is then looked
//! up in both directions, in random order, which is what a busy gateway's
//! cache sees (the established rows time one hot flow instead):
//! - a first pass of SYN-ACKs opens the sampled flows and refreshes their
//!   timestamps (not timed: a state change writes both halves);
//! - then one data segment per sampled flow client -> remote, then one per
//!   flow remote -> client, timed; both passes take well under the one
//!   second after which a packet rewrites a flow's timestamp, so they time
//!   the lookups, not the refresh.
//!
//! At each level the agent's own sweep and flow listing are timed too, in
//! wall time and in the CPU time of the thread that runs them: they read
//! the maps from userspace in batches of a few thousand entries.
use std::{path::Path, time::Instant};

use anyhow::{bail, Result};
use egress_agent::datapath::{
    conntrack,
    loader::Datapath,
    sweeper::{Sweeper, REPLY_HALVES_EVERY},
};
use egress_common::conntrack::NatEntry;

use crate::{
    common::TC_ACT_REDIRECT,
    datapath::{self, counter},
    flows::{nat_port_of, Flow},
    map_memory,
    random::XorShift,
    report::Report,
    timing::{run_each, run_expecting, Calibration, Stats},
};

/// One datapath size and the live-flow counts to measure it at.
pub struct Plan {
    pub conntrack_size: u32,
    pub levels: Vec<u32>,
}

pub fn measure(
    report: &mut Report,
    calibration: &Calibration,
    plans: &[Plan],
    sample: usize,
    object: Option<&Path>,
) -> Result<()> {
    for plan in plans {
        let mut dp = datapath::fresh(plan.conntrack_size, object)?;
        let size = plan.conntrack_size;
        let mut nat_ports: Vec<u16> = Vec::new();
        for &level in &plan.levels {
            let from = nat_ports.len() as u32;
            let mut durations = Vec::with_capacity((level - from) as usize);
            for index in from..level {
                let created =
                    run_expecting(&mut dp, &Flow::spread(index).syn(), TC_ACT_REDIRECT, "a new flow's SYN")?;
                nat_ports.push(nat_port_of(&created.packet)?);
                durations.push(created.duration_ns);
            }
            let created = counter(&dp, "flow_created")?;
            if created != level as u64 {
                bail!("filling to {level} flows created {created}");
            }
            let at = format!("{} live flows, --conntrack-size {size}", short(level));
            let insert = Stats::of(&mut durations).minus(calibration.overhead_ns());
            report.add(
                format!("new flow while filling {}→{} ({at}): mean", short(from), short(level)),
                insert.mean,
                "ns/flow",
            );
            report.add(
                format!("  = insert rate, one core, program time only ({at})"),
                1e9 / insert.mean,
                "flows/s",
            );
            lookups(report, calibration, &mut dp, &nat_ports, sample, &at)?;
            agent_walks(report, &mut dp, level, &at)?;
        }
        let bytes = map_memory::conntrack_bytes()?;
        report.add(
            format!("conntrack map memory, both halves, --conntrack-size {size}"),
            bytes as f64 / (1 << 20) as f64,
            "MiB",
        );
        report.add(
            format!("  = per flow slot (preallocated, any fill), --conntrack-size {size}"),
            bytes as f64 / size as f64,
            "bytes/flow",
        );
    }
    Ok(())
}

/// Established-path cost for a random sample of the flows in `nat_ports`.
fn lookups(
    report: &mut Report,
    calibration: &Calibration,
    dp: &mut Datapath,
    nat_ports: &[u16],
    sample: usize,
    at: &str,
) -> Result<()> {
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15 ^ nat_ports.len() as u64);
    let picked: Vec<u32> = random.sample(nat_ports.len() as u32, sample.min(nat_ports.len()));
    let packets = |make: &dyn Fn(Flow, u16) -> Vec<u8>, order: &[u32]| -> Vec<Vec<u8>> {
        order.iter().map(|&i| make(Flow::spread(i), nat_ports[i as usize])).collect()
    };
    let syn_acks = packets(&|flow, nat_port| flow.syn_ack(nat_port), &picked);
    let to_remote = packets(&|flow, _| flow.data_to_remote(), &random.shuffled(&picked));
    let to_client = packets(&|flow, nat_port| flow.data_to_client(nat_port), &random.shuffled(&picked));

    run_each(dp, syn_acks.iter().map(Vec::as_slice), TC_ACT_REDIRECT, "a sampled flow's SYN-ACK")?;
    let mut durations =
        run_each(dp, to_remote.iter().map(Vec::as_slice), TC_ACT_REDIRECT, "a sampled flow's data")?;
    let stats = Stats::of(&mut durations).minus(calibration.overhead_ns());
    report.add(format!("established client→remote, random flow ({at}): median"), stats.median, "ns/packet");
    let mut durations =
        run_each(dp, to_client.iter().map(Vec::as_slice), TC_ACT_REDIRECT, "a sampled flow's reply")?;
    let stats = Stats::of(&mut durations).minus(calibration.overhead_ns());
    report.add(format!("established remote→client, random flow ({at}): median"), stats.median, "ns/packet");
    Ok(())
}

/// What the agent does with the maps, timed in this process with the
/// agent's own functions: the sweep, a slice an interval, through
/// REPLY_HALVES_EVERY passes over the original halves (one of which walks
/// the reply halves too), tallying the flows for the metrics as it goes;
/// on request, the flow listing behind `status`.
fn agent_walks(report: &mut Report, dp: &mut Datapath, level: u32, at: &str) -> Result<()> {
    let mut sweeper = Sweeper::default();
    let (mut longest, mut cpu, mut intervals, mut passes) = (0.0f64, 0.0, 0u32, 0u64);
    while passes < REPLY_HALVES_EVERY {
        let (started, cpu_before) = (Instant::now(), thread_cpu_ms());
        let step = sweeper.step(&mut dp.maps, egress_agent::netdev::monotonic_ns())?;
        longest = longest.max(started.elapsed().as_secs_f64() * 1e3);
        cpu += thread_cpu_ms() - cpu_before;
        intervals += 1;
        if step.removed != 0 {
            bail!("the sweep removed {} of {level} live flows", step.removed);
        }
        if let Some(kept) = step.tally {
            passes += 1;
            if kept.bindings() != level as u64 {
                bail!("a sweep pass kept {} of {level} live flows", kept.bindings());
            }
        }
    }
    report.add(format!("agent sweep, longest interval of {REPLY_HALVES_EVERY} passes ({at})"), longest, "ms");
    report.add(format!("  = intervals per pass ({at})"), intervals as f64 / passes as f64, "");
    report.add(format!("  = agent CPU per interval, mean ({at})"), cpu / intervals as f64, "ms");
    let started = Instant::now();
    let listed = conntrack::flows::<NatEntry>(&dp.maps)?.len();
    let listing = started.elapsed();
    if listed != level as usize {
        bail!("listed {listed} flows, expected {level}");
    }
    report.add(format!("agent flow listing for `status` ({at})"), listing.as_secs_f64() * 1e3, "ms");
    Ok(())
}

/// CPU time (user + system) of the calling thread so far, in ms.
fn thread_cpu_ms() -> f64 {
    // SAFETY: getrusage writes one rusage into the zeroed struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(usage.ru_utime) + ms(usage.ru_stime)
}

/// 10000 -> "10k", 1000000 -> "1M".
fn short(n: u32) -> String {
    match n {
        0 => "0".into(),
        n if n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}
