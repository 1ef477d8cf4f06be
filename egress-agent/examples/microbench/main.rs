//! Micro-benchmarks of the datapath program and the agent (run as root;
//! `cargo xtask bench-micro` builds everything and runs this).
//!
//! The real program, loaded the way the agent loads it, timed with
//! BPF_PROG_TEST_RUN: the established fast path both ways, the new-flow
//! path, crowded NAT ports, a fragment without ports both ways, a breakdown by where packets leave the program,
//! conntrack at 10k/100k/1M live flows (insert cost, lookup cost, map
//! memory), and the real agent binary's memory idle and with 100k flows.
//! Everything runs `--rounds` times (3); the table (measurement, median,
//! range, unit) is printed and with `--json PATH` also written.
//!
//! Module map: `timing` (how a test run is timed, and why not with
//! `repeat`), `flows` (the packets), `datapath` (loading), `established`,
//! `new_flow`, `fragments`, `breakdown`, `scale`, `map_memory`,
//! `agent_rss`, `report`, `random` (the samples' generator), `spin` (one
//! path in a loop, to profile).
#[path = "../../tests/common/mod.rs"]
mod common;

mod agent_rss;
mod breakdown;
mod datapath;
mod established;
mod flows;
mod fragments;
mod map_memory;
mod new_flow;
mod random;
mod report;
mod scale;
mod spin;
mod timing;

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};
use egress_common::maps::CT_MAX_DEFAULT;

use report::Report;
use timing::Calibration;

#[derive(Parser)]
#[command(about = "Micro-benchmarks of the egress-gateway datapath and agent (root)")]
struct Args {
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// A short run (fewer packets, up to 100k flows, 10k through the agent):
    /// a smoke test, not numbers to quote.
    #[arg(long)]
    quick: bool,
    /// Only these parts (repeatable); default all.
    #[arg(long, value_enum)]
    only: Vec<Part>,
    /// Time this eBPF object instead of the embedded one (a variant built
    /// from a scratch copy of egress-ebpf, for comparisons).
    #[arg(long)]
    object: Option<PathBuf>,
    /// Rounds of everything; the table shows each row's median and range
    /// [default: 3, --quick: 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// CPU to run on (default: the last one).
    #[arg(long)]
    cpu: Option<usize>,
    /// Instead of measuring, run one path over and over (for a profiler
    /// such as `perf record -C CPU`), for --spin-seconds.
    #[arg(long, value_enum)]
    spin: Option<spin::Spin>,
    /// How long --spin runs.
    #[arg(long, default_value_t = 10)]
    spin_seconds: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Established path, new flows, crowded NAT ports, fragments, breakdown.
    Paths,
    /// Conntrack at 10k, 100k and 1M flows.
    Scale,
    /// The agent binary's memory and sweep cost.
    Agent,
}

/// How much of everything a run does.
struct Sizes {
    rounds: usize,
    runs: usize,
    new_flows: u32,
    crowded_probes: u32,
    plans: Vec<scale::Plan>,
    sample: usize,
    agent_flows: u32,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            rounds: 3,
            runs: 100_000,
            new_flows: 10_000,
            crowded_probes: 2_000,
            plans: vec![
                scale::Plan { conntrack_size: CT_MAX_DEFAULT, levels: vec![10_000, 100_000] },
                scale::Plan { conntrack_size: 1 << 20, levels: vec![100_000, 1_000_000] },
            ],
            sample: 20_000,
            agent_flows: 100_000,
        }
    }

    fn quick() -> Sizes {
        Sizes {
            rounds: 1,
            runs: 10_000,
            new_flows: 2_000,
            crowded_probes: 200,
            plans: vec![scale::Plan { conntrack_size: CT_MAX_DEFAULT, levels: vec![10_000, 100_000] }],
            sample: 5_000,
            agent_flows: 10_000,
        }
    }
}

fn main() {
    if let Err(err) = run(Args::parse()) {
        eprintln!("microbench: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the micro-benchmarks load eBPF programs and create network namespaces: run them as root");
    }
    let started = Instant::now();
    let sizes = if args.quick { Sizes::quick() } else { Sizes::full() };
    let wants = |part| args.only.is_empty() || args.only.contains(&part);
    let object = args.object.as_deref();
    let cpus = num_cpus();
    let cpu = args.cpu.unwrap_or(cpus.saturating_sub(1));
    let machine = machine_description(cpus, cpu);
    timing::pin_to_cpu(cpu)?;
    eprintln!("microbench: {machine}");

    if let Some(path) = args.spin {
        let runs = spin::run_for(path, std::time::Duration::from_secs(args.spin_seconds), object)?;
        eprintln!("microbench: {runs} runs on CPU {cpu}");
        return Ok(());
    }

    let mut report = Report::default();
    for round in 0..args.rounds.unwrap_or(sizes.rounds) {
        report.start_round(round);
        timing::pin_to_cpu(cpu)?;
        measure_round(&mut report, &sizes, &wants, object)?;
        if wants(Part::Agent) {
            // The agent is a multi-threaded process like in a pod, not pinned.
            timing::unpin(cpus)?;
            agent_rss::measure(&mut report, sizes.agent_flows)?;
        }
    }

    println!("# {machine}");
    report.print_table();
    println!("# took {:.0} s", started.elapsed().as_secs_f64());
    if let Some(path) = &args.json {
        report.write_json(path, &machine)?;
    }
    Ok(())
}

/// Everything but the agent, on the pinned CPU.
fn measure_round(
    report: &mut Report,
    sizes: &Sizes,
    wants: &dyn Fn(Part) -> bool,
    object: Option<&Path>,
) -> Result<()> {
    let calibration = {
        let mut dp = datapath::fresh(CT_MAX_DEFAULT, object)?;
        Calibration::measure(&mut dp, &flows::untouched_frame(), sizes.runs)?
    };
    report.add("calibration: untouched frame, repeat=1e6", calibration.in_loop_ns, "ns/packet");
    report.add(
        "calibration: same frame, one run per call (mean of the fastest 99%)",
        calibration.single_ns,
        "ns/packet",
    );
    report.add("  = clock overhead subtracted from every single-run figure", calibration.overhead_ns(), "ns");
    if wants(Part::Paths) {
        established::measure(report, &calibration, sizes.runs, object)?;
        new_flow::measure(report, &calibration, sizes.new_flows, object)?;
        new_flow::measure_crowded(report, &calibration, &[50, 90, 95, 99], sizes.crowded_probes, object)?;
        fragments::measure(report, &calibration, sizes.runs, object)?;
        breakdown::measure(report, &calibration, sizes.runs, object)?;
    }
    if wants(Part::Scale) {
        scale::measure(report, &calibration, &sizes.plans, sizes.sample, object)?;
    }
    Ok(())
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Kernel, CPU model, CPUs, memory: one line for the table's header.
fn machine_description(cpus: usize, cpu: usize) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / (1 << 20) as f64);
    format!("Linux {}, {model}, {cpus} CPUs (pinned to CPU {cpu}), {mem_gib:.0} GiB", kernel.trim())
}
