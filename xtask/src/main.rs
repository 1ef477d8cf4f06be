//! Project tasks: `cargo xtask <task>`.
//!
//! - `build-ebpf`: set up the eBPF toolchain if needed and build the program.
//! - `build`: build-ebpf plus the release agent (the object embedded).
//! - `demo`: a namespace "cluster" on this machine, traffic through the gateway.
//! - `test`: everything CI runs (installs the Debian packages it needs).
mod demo;
mod kernels;
mod run;
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
}

fn main() {
    let cli = Cli::parse();
    let result: Result<()> = match cli.task {
        Task::BuildEbpf => toolchain::build_ebpf(),
        Task::Build => toolchain::build_all(),
        Task::Demo => demo::run(),
        Task::Test { filter } => test::run(&filter),
    };
    if let Err(err) = result {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}
