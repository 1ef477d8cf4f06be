//! `cargo xtask bench`: three ways out of the cluster, measured in the same
//! run on the same namespace topology (see `testbed.rs`):
//!
//! - `direct`: the worker egresses through its own node, no gateway;
//! - `linux`: the same kind of worker-side tunnel into a gateway pod built
//!   from Linux's own pieces (VXLAN device, forwarding, MASQUERADE);
//! - `ebpf`: our agent in the gateway pod.
//!
//! Every round runs every measurement on every path; the order of the paths
//! rotates from round to round (direct, linux, ebpf; then ebpf, direct,
//! linux; ...) so slow drifts of the machine hit all of them alike. The
//! table shows the medians over the rounds. Every measurement runs over
//! IPv4 and then over IPv6 (the cluster is dual-stack; the `linux` path's
//! IPv6 is ip6tables MASQUERADE), each family with its own rows. One file
//! per kind of measurement; `table.rs` prints, `--json` keeps every sample.
//!
//! Benchmarks are not tests: nothing here asserts a timing. A run fails only
//! when a measurement could not be taken at all.

mod conn_rate;
mod cpu;
mod latency;
mod machine;
mod table;
mod testbed;
mod throughput;
mod udp_pps;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use egress_tests::netns;

use crate::{run::is_root, toolchain};
use machine::Machine;
use testbed::Testbed;

/// One way out of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EgressPath {
    Direct,
    Linux,
    Ebpf,
}

impl EgressPath {
    pub const ALL: [EgressPath; 3] = [EgressPath::Direct, EgressPath::Linux, EgressPath::Ebpf];

    pub fn name(self) -> &'static str {
        match self {
            EgressPath::Direct => "direct",
            EgressPath::Linux => "linux",
            EgressPath::Ebpf => "ebpf",
        }
    }

    pub fn parse(name: &str) -> Result<EgressPath> {
        EgressPath::ALL
            .into_iter()
            .find(|p| p.name() == name.trim())
            .with_context(|| format!("unknown path {name:?}: the paths are direct, linux and ebpf"))
    }
}

/// The address family a measurement runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// This family's one of a metric's two rows.
    pub fn pick(self, v4: &'static Metric, v6: &'static Metric) -> &'static Metric {
        match self {
            Family::V4 => v4,
            Family::V6 => v6,
        }
    }
}

/// What `cargo xtask bench` was asked for.
#[derive(Clone, Debug)]
pub struct Options {
    pub rounds: Option<u32>,
    pub secs: Option<f64>,
    pub paths: Vec<String>,
    pub json: Option<PathBuf>,
    /// One short round (what CI could run): checks that everything works,
    /// the numbers are rough.
    pub smoke: bool,
}

/// The settings a run uses, after the defaults and `--smoke`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub rounds: u32,
    /// Seconds per throughput, connection-rate and UDP measurement.
    pub secs: f64,
    /// Pings per ping measurement (0.2 ms apart).
    pub pings: u32,
}

impl Settings {
    fn from_options(o: &Options) -> Result<Settings> {
        let (rounds, secs, pings) = if o.smoke { (1, 1.5, 250) } else { (5, 10.0, 1000) };
        let settings = Settings { rounds: o.rounds.unwrap_or(rounds), secs: o.secs.unwrap_or(secs), pings };
        if settings.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        if !(0.5..=600.0).contains(&settings.secs) {
            bail!("--secs must be between 0.5 and 600");
        }
        Ok(settings)
    }
}

/// One row of the table.
#[derive(Debug)]
pub struct Metric {
    /// Key in the JSON.
    pub id: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub lower_is_better: bool,
}

impl Metric {
    pub const fn higher(id: &'static str, label: &'static str, unit: &'static str) -> Metric {
        Metric { id, label, unit, lower_is_better: false }
    }

    pub const fn lower(id: &'static str, label: &'static str, unit: &'static str) -> Metric {
        Metric { id, label, unit, lower_is_better: true }
    }
}

/// The rows, in table order.
const METRICS: &[&Metric] = &[
    &throughput::TCP_1_UP,
    &throughput::TCP_4_UP,
    &throughput::TCP_1_DOWN,
    &throughput::TCP_4_DOWN,
    &conn_rate::CONN_PER_S,
    &conn_rate::ONE_DESTINATION_RATE,
    &udp_pps::UDP_DELIVERED,
    &udp_pps::UDP_LOSS,
    &latency::PING_RTT,
    &latency::TCP_RR_SAME_CPU,
    &latency::TCP_RR_ACROSS_CPUS,
    &throughput::CPU_1_UP,
    &throughput::CPU_1_DOWN,
    &udp_pps::UDP_SENT,
    &conn_rate::CONN_ERRORS,
    &throughput::TCP_1_UP_V6,
    &throughput::TCP_4_UP_V6,
    &throughput::TCP_1_DOWN_V6,
    &throughput::TCP_4_DOWN_V6,
    &conn_rate::CONN_PER_S_V6,
    &conn_rate::ONE_DESTINATION_RATE_V6,
    &udp_pps::UDP_DELIVERED_V6,
    &udp_pps::UDP_LOSS_V6,
    &latency::PING_RTT_V6,
    &latency::TCP_RR_SAME_CPU_V6,
    &latency::TCP_RR_ACROSS_CPUS_V6,
    &throughput::CPU_1_UP_V6,
    &throughput::CPU_1_DOWN_V6,
    &udp_pps::UDP_SENT_V6,
    &conn_rate::CONN_ERRORS_V6,
];

/// One measured value of one metric.
#[derive(Debug)]
pub struct Sample {
    pub metric: &'static Metric,
    pub value: f64,
}

impl Sample {
    pub fn new(metric: &'static Metric, value: f64) -> Sample {
        Sample { metric, value }
    }
}

/// One kind of run; each yields one or more samples.
#[derive(Clone, Copy, Debug)]
enum Measurement {
    Tcp { streams: u32, download: bool },
    ConnRate,
    OneDestinationRate,
    UdpPps,
    Ping,
    TcpRr,
}

/// The runs of one round, in order (each in both families).
const MEASUREMENTS: &[Measurement] = &[
    Measurement::Tcp { streams: 1, download: false },
    Measurement::Tcp { streams: 4, download: false },
    Measurement::Tcp { streams: 1, download: true },
    Measurement::Tcp { streams: 4, download: true },
    Measurement::ConnRate,
    Measurement::OneDestinationRate,
    Measurement::UdpPps,
    Measurement::Ping,
    Measurement::TcpRr,
];

impl Measurement {
    fn name(self) -> String {
        match self {
            Measurement::Tcp { streams, download } => {
                format!(
                    "tcp {streams} stream{} {}",
                    if streams > 1 { "s" } else { "" },
                    if download { "down" } else { "up" }
                )
            }
            Measurement::ConnRate => "conn/s".into(),
            Measurement::OneDestinationRate => "conn/s one destination".into(),
            Measurement::UdpPps => "udp 64B".into(),
            Measurement::Ping => "ping".into(),
            Measurement::TcpRr => "tcp rr".into(),
        }
    }

    fn run(
        self,
        testbed: &Testbed,
        path: EgressPath,
        settings: &Settings,
        family: Family,
    ) -> Result<Vec<Sample>> {
        match self {
            Measurement::Tcp { streams, download } => {
                throughput::measure(testbed, path, settings, family, streams, download)
            }
            Measurement::ConnRate => conn_rate::measure(testbed, path, settings, family),
            Measurement::OneDestinationRate => {
                conn_rate::measure_one_destination(testbed, path, settings, family)
            }
            Measurement::UdpPps => udp_pps::measure(testbed, path, settings, family),
            Measurement::Ping => latency::measure_ping(testbed, path, settings, family),
            Measurement::TcpRr => latency::measure_tcp_rr(testbed, path, settings, family),
        }
    }
}

/// Pause between runs, so queues and sockets of one run are gone before the
/// next starts.
const SETTLE: Duration = Duration::from_millis(300);
/// How long the machine's idle load is sampled before and after the rounds.
const BACKGROUND_WINDOW: Duration = Duration::from_secs(2);
/// Background load above which the run says its numbers are suspect.
const BACKGROUND_WARNING: f64 = 0.05;

/// Everything measured in one invocation.
#[derive(Debug, Default)]
pub struct Results {
    /// Samples per (metric id, path), in round order.
    pub samples: BTreeMap<(&'static str, EgressPath), Vec<f64>>,
    /// The path order of each round.
    pub orders: Vec<Vec<EgressPath>>,
    /// Runs that failed (round, measurement, path, error).
    pub failures: Vec<String>,
    /// The agent's counters after the last round (ebpf path only).
    pub agent_counters: Option<BTreeMap<String, u64>>,
    /// Share of the machine busy with other work just before and just
    /// after the rounds (the benchmark idle).
    pub background_load: Vec<f64>,
}

impl Results {
    /// The median of `metric` on `path`, if it was measured.
    pub fn median(&self, metric: &Metric, path: EgressPath) -> Option<f64> {
        let mut values = self.samples.get(&(metric.id, path))?.clone();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
    }
}

/// The path order of round `round` (0-based): the selected order rotated
/// right by `round`, so each path takes each position in turn.
fn round_order(paths: &[EgressPath], round: u32) -> Vec<EgressPath> {
    let mut order = paths.to_vec();
    if !order.is_empty() {
        let shift = round as usize % order.len();
        order.rotate_right(shift);
    }
    order
}

pub fn run(options: &Options) -> Result<()> {
    if !is_root() {
        bail!("the benchmark creates network namespaces and loads an eBPF program: run `cargo xtask bench` as root");
    }
    let settings = Settings::from_options(options)?;
    let mut paths = Vec::new();
    for name in &options.paths {
        let path = EgressPath::parse(name)?;
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    if paths.is_empty() {
        bail!("--paths is empty: give some of direct,linux,ebpf");
    }
    let command = command_line();
    egress_tests::tools::ensure_packages()?;
    toolchain::build_all()?;
    let prefix = netns::run_prefix();
    netns::install_signal_cleanup(&prefix)?;

    let machine = Machine::read();
    println!("\n==> {command}");
    println!("    {}", machine.describe());
    println!(
        "    {} round(s), {} s per throughput/connection/UDP run, {} pings, paths {}",
        settings.rounds,
        settings.secs,
        settings.pings,
        paths.iter().map(|p| p.name()).collect::<Vec<_>>().join(",")
    );
    let started = Instant::now();
    println!("\n==> setting up the namespace cluster and the paths");
    let testbed = Testbed::start(&paths, &toolchain::agent_binary())?;
    testbed.check_paths()?;
    let results = measure_rounds(&testbed, &paths, &settings);
    drop(testbed);
    netns::cleanup_prefix(&prefix);
    let elapsed = started.elapsed();

    println!();
    print!("{}", table::render(&results, &paths, &machine, &command, &settings, elapsed));
    if let Some(path) = &options.json {
        let json = table::to_json(&results, &paths, &machine, &command, &settings, elapsed);
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("raw samples and medians written to {}", path.display());
    }
    if !results.failures.is_empty() {
        bail!("{} run(s) failed:\n  {}", results.failures.len(), results.failures.join("\n  "));
    }
    Ok(())
}

/// Samples the machine's load while the benchmark is idle; warns when other
/// work is running.
fn check_background(results: &mut Results, when: &str) {
    match cpu::background_load(BACKGROUND_WINDOW) {
        Ok(load) => {
            results.background_load.push(load);
            if load > BACKGROUND_WARNING {
                eprintln!(
                    "    WARNING: {:.0}% of the machine was busy with other work {when} the rounds: the numbers are suspect",
                    load * 100.0
                );
            }
        }
        Err(err) => eprintln!("    (could not read the background load: {err:#})"),
    }
}

fn measure_rounds(testbed: &Testbed, paths: &[EgressPath], settings: &Settings) -> Results {
    let mut results = Results::default();
    check_background(&mut results, "before");
    for round in 0..settings.rounds {
        let order = round_order(paths, round);
        println!(
            "\n==> round {}/{}: {}",
            round + 1,
            settings.rounds,
            order.iter().map(|p| p.name()).collect::<Vec<_>>().join(", ")
        );
        for family in Family::ALL {
            for &measurement in MEASUREMENTS {
                for &path in &order {
                    std::thread::sleep(SETTLE);
                    let name = match family {
                        Family::V4 => measurement.name(),
                        Family::V6 => format!("{} v6", measurement.name()),
                    };
                    match measurement.run(testbed, path, settings, family) {
                        Ok(samples) => {
                            let first = &samples[0];
                            println!(
                                "    {name:<24} {:<6} {:>10} {}",
                                path.name(),
                                table::format_value(first.value),
                                first.metric.unit
                            );
                            for sample in samples {
                                results
                                    .samples
                                    .entry((sample.metric.id, path))
                                    .or_default()
                                    .push(sample.value);
                            }
                        }
                        Err(err) => {
                            let failure = format!("round {} {name} {}: {err:#}", round + 1, path.name());
                            eprintln!("    FAILED {failure}");
                            results.failures.push(failure);
                        }
                    }
                }
            }
        }
        results.orders.push(order);
    }
    check_background(&mut results, "after");
    results.agent_counters = testbed.agent_counters();
    results
}

/// How this run was invoked, as a command to paste.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo xtask {}", args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_rotate_the_path_order() {
        use EgressPath::*;
        let paths = [Direct, Linux, Ebpf];
        assert_eq!(round_order(&paths, 0), vec![Direct, Linux, Ebpf]);
        assert_eq!(round_order(&paths, 1), vec![Ebpf, Direct, Linux]);
        assert_eq!(round_order(&paths, 2), vec![Linux, Ebpf, Direct]);
        assert_eq!(round_order(&paths, 3), vec![Direct, Linux, Ebpf]);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        let mut r = Results::default();
        r.samples.insert((throughput::TCP_1_UP.id, EgressPath::Ebpf), vec![3.0, 1.0, 2.0]);
        r.samples.insert((throughput::TCP_1_UP.id, EgressPath::Linux), vec![4.0, 1.0, 2.0, 3.0]);
        assert_eq!(r.median(&throughput::TCP_1_UP, EgressPath::Ebpf), Some(2.0));
        assert_eq!(r.median(&throughput::TCP_1_UP, EgressPath::Linux), Some(2.5));
        assert_eq!(r.median(&throughput::TCP_1_UP, EgressPath::Direct), None);
    }
}
