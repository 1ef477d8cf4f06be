//! The program on the oldest kernel we target in CI: Debian 12's 6.1,
//! booted under qemu by the shared kernel-matrix tool. There, the packet
//! scenarios run against the real 6.1 verifier and helpers, and the agent
//! attaches (netlink clsact, not TCX), reports status and detaches on
//! SIGTERM.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::run::{status, workspace_root};

/// egress-agent's BPF_PROG_TEST_RUN test files, run inside the VM.
const PACKET_SCENARIOS: &[&str] = &["prog_snat", "prog_rev_nat", "prog_drops", "prog_sweep"];

/// The kernel package; override with EGRESS_TEST_KERNEL.
const DEFAULT_KERNEL: &str = "linux-image-6.1.0-56-amd64";

fn kernel_matrix_tool() -> Option<PathBuf> {
    let tool = workspace_root().join("../shared/tools/kernel-matrix/run-in-kernel.sh");
    tool.exists().then_some(tool)
}

/// Builds the packet-scenario test binaries and returns their paths.
fn packet_scenario_binaries() -> Result<Vec<PathBuf>> {
    let out = Command::new("cargo")
        .args(["test", "--release", "--locked", "-p", "egress-agent", "--no-run", "--message-format=json"])
        .args(PACKET_SCENARIOS.iter().flat_map(|t| ["--test", *t]))
        .current_dir(workspace_root())
        .output()
        .context("building the packet-scenario tests")?;
    if !out.status.success() {
        bail!("building the packet-scenario tests failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let binaries: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        // Test harness artifacts only (the agent's own binary is listed too).
        .filter(|v| v["profile"]["test"] == true)
        .filter_map(|v| v["executable"].as_str().map(PathBuf::from))
        .collect();
    if binaries.len() != PACKET_SCENARIOS.len() {
        bail!("expected {} packet-scenario test binaries, found {binaries:?}", PACKET_SCENARIOS.len());
    }
    Ok(binaries)
}

pub fn run(agent: &std::path::Path) -> Result<()> {
    let Some(tool) = kernel_matrix_tool() else {
        println!(
            "xtask: SKIPPED the Linux 6.1 run: ../shared/tools/kernel-matrix is not beside this checkout"
        );
        return Ok(());
    };
    let kernel = std::env::var("EGRESS_TEST_KERNEL").unwrap_or_else(|_| DEFAULT_KERNEL.to_string());
    println!("xtask: packet scenarios and attach/detach on {kernel} (qemu)");
    let binaries = packet_scenario_binaries()?;
    let work = std::env::temp_dir().join(format!("egress-kernel-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let pods = work.join("pods");
    std::fs::write(&pods, "10.99.0.1 host\n")?;
    let mut script = String::from("set -e\n");
    for b in &binaries {
        script.push_str(&format!("{} --test-threads=1\n", b.display()));
    }
    // The kernel-matrix guest has veth1 (10.99.0.2) in netns `peer`.
    script.push_str(&format!(
        "ip netns exec peer {agent} gateway --interface veth1 --pods-file {pods} 2>{log} &\n\
         pid=$!\n\
         for i in 1 2 3 4 5 6 7 8 9 10; do grep -q ready {log} && break; sleep 1; done\n\
         grep ready {log} || {{ cat {log}; exit 1; }}\n\
         ip netns exec peer {agent} status --interface veth1\n\
         ip netns exec peer tc filter show dev veth1 ingress | grep -q egress_gateway\n\
         kill -TERM $pid; wait $pid\n\
         if ip netns exec peer tc filter show dev veth1 ingress | grep -q egress_gateway; then echo 'filter left behind'; exit 1; fi\n\
         echo 'attach, status, detach: ok'\n",
        agent = agent.display(),
        pods = pods.display(),
        log = work.join("agent.log").display(),
    ));
    let script_path = work.join("run.sh");
    std::fs::write(&script_path, script)?;
    let mut cmd = Command::new("bash");
    cmd.arg(&tool).arg(&kernel);
    for path in binaries.iter().chain([agent.to_path_buf(), pods, script_path.clone()].iter()) {
        cmd.arg("--copy").arg(path);
    }
    cmd.arg("--shell-cmd").arg(format!("sh {}", script_path.display())).env("TIMEOUT", "180");
    let result = status(&mut cmd).with_context(|| format!("the tests on {kernel} failed"));
    let _ = std::fs::remove_dir_all(&work);
    result
}
