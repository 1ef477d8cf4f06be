//! Project tasks: `cargo xtask <task>`.
//!
//! - `build-ebpf`: set up the eBPF toolchain if needed and build the program.
//! - `build`: build-ebpf plus the release agent (the object embedded).
//! - `demo`: a namespace "cluster" on this machine, traffic through the gateway.
//! - `test`: everything CI runs (installs the Debian packages it needs).
//! - `kernels`: only the Linux 6.1 step of `test` (packet scenarios and
//!   attach/restart/detach under qemu).
//! - `bench`: direct egress, a Linux gateway and ours, side by side.
//! - `bench-micro`: the program timed with BPF_PROG_TEST_RUN, conntrack at scale, agent memory.
//! - `soak`: ten minutes of mixed traffic; flows must expire, memory stay flat.
//! - `build-static`: the static (musl) agent the image ships.
//! - `image`: the container image, offline (docker or podman; podman installed when neither is).
//! - `kind-test`: the manifests end to end in a kind cluster.
mod bench;
mod demo;
mod engine;
mod image;
mod kernels;
mod kind;
mod microbench;
mod run;
mod soak;
mod test;
mod toolchain;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF object (sets up rust-src and bpf-linker when missing).
    BuildEbpf,
    /// Build the eBPF object and the release agent binary.
    Build,
    /// Run the namespace demo: a listed worker egresses with the gateway's IP.
    Demo,
    /// Run all tests: unit, BPF_PROG_TEST_RUN packet scenarios, namespace integration.
    Test {
        /// Extra arguments passed to `cargo test` after `--` (e.g. a test name filter).
        #[arg(last = true)]
        filter: Vec<String>,
    },
    /// Only the Linux 6.1 step of `test`: every packet scenario and the agent's
    /// attach, restart and detach, under qemu.
    Kernels,
    /// Benchmark direct egress, a plain-Linux gateway and the eBPF gateway side by side.
    Bench {
        /// Rounds; the path order rotates every round and the table shows medians [default: 5, --smoke: 1].
        #[arg(long)]
        rounds: Option<u32>,
        /// Seconds per throughput, connection-rate and UDP run [default: 10, --smoke: 1.5].
        #[arg(long)]
        secs: Option<f64>,
        /// Paths to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "direct,linux,ebpf")]
        paths: Vec<String>,
        /// Write every sample, the medians and the ratios to this JSON file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// One short round (about 1.5 s per run): checks that everything works; rough numbers.
        #[arg(long)]
        smoke: bool,
    },
    /// Micro-benchmarks: the program with BPF_PROG_TEST_RUN, conntrack at 10k/100k/1M flows, agent memory.
    BenchMicro {
        /// Also write the table to this JSON file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// A short smoke run (seconds): checks that everything works; rough numbers.
        #[arg(long)]
        quick: bool,
        /// Rounds of everything; the table shows medians and ranges [default: 3, --quick: 1].
        #[arg(long)]
        rounds: Option<usize>,
        /// Only these parts (repeatable): paths, scale, agent.
        #[arg(long)]
        only: Vec<String>,
    },
    /// Mixed traffic for minutes; then every flow must expire and the agent's memory stay flat.
    Soak {
        /// How long the traffic runs.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
    },
    /// Build the static (musl) agent the image ships, the eBPF object embedded.
    BuildStatic {
        /// Also copy it, stripped, to this path.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Build the container image offline (deploy/Containerfile: the static agent FROM scratch) with docker or podman.
    Image {
        /// Image reference to tag the build with.
        #[arg(long, default_value = image::DEFAULT_TAG)]
        tag: String,
    },
    /// End-to-end test in a two-node kind cluster (needs docker, kind, kubectl).
    KindTest {
        /// Print a SKIPPED line and exit 0 when docker, kind or kubectl is missing.
        #[arg(long)]
        skip_if_missing: bool,
        /// Keep the cluster and the echo container afterwards.
        #[arg(long)]
        keep: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.task {
        Task::BuildEbpf => toolchain::build_ebpf(),
        Task::Build => toolchain::build_all(),
        Task::Demo => demo::run(),
        Task::Test { filter } => test::run(&filter),
        Task::Kernels => test::kernels_only(),
        Task::Bench { rounds, secs, paths, json, smoke } => {
            bench::run(&bench::Options { rounds, secs, paths, json, smoke })
        }
        Task::BenchMicro { json, quick, rounds, only } => {
            microbench::run(&microbench::Options { json, quick, rounds, only })
        }
        Task::Soak { minutes } => soak::run(minutes),
        Task::BuildStatic { out } => image::build_static(out.as_deref()),
        Task::Image { tag } => image::run(&tag),
        Task::KindTest { skip_if_missing, keep } => kind::run(&kind::Options { skip_if_missing, keep }),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}
