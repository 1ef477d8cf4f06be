//! `cargo xtask bench-micro`: micro-benchmarks of the datapath program and
//! the agent. Builds everything (as `cargo xtask build` does), then runs
//! `egress-agent/examples/microbench` as root: the real program timed with
//! BPF_PROG_TEST_RUN (established path both ways, new flows, conntrack at
//! 10k/100k/1M flows, map memory) and the real agent binary's memory with
//! many flows. Three rounds; prints each row's median and range, and with
//! `--json PATH` also writes them.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::{
    run::{is_root, status, workspace_root},
    toolchain,
};

pub struct Options {
    pub json: Option<PathBuf>,
    pub quick: bool,
    pub rounds: Option<usize>,
    /// `paths`, `scale`, `agent`; empty for all.
    pub only: Vec<String>,
}

pub fn run(opts: &Options) -> Result<()> {
    if !is_root() {
        bail!("the micro-benchmarks load eBPF programs and create network namespaces: run `cargo xtask bench-micro` as root");
    }
    egress_tests::tools::ensure_packages()?;
    toolchain::build_all()?;
    status(
        Command::new("cargo")
            .args(["build", "--release", "--locked", "-p", "egress-agent", "--example", "microbench"])
            .current_dir(workspace_root()),
    )
    .context("building the micro-benchmarks")?;

    let mut bench = Command::new(workspace_root().join("target/release/examples/microbench"));
    if let Some(json) = &opts.json {
        // The benchmark runs from the workspace root; keep the path the
        // caller meant.
        let json = std::env::current_dir()?.join(json);
        bench.arg("--json").arg(json);
    }
    if opts.quick {
        bench.arg("--quick");
    }
    if let Some(rounds) = opts.rounds {
        bench.args(["--rounds", &rounds.to_string()]);
    }
    for part in &opts.only {
        bench.args(["--only", part]);
    }
    status(bench.current_dir(workspace_root()).env("EGRESS_AGENT_BIN", toolchain::agent_binary()))
}
