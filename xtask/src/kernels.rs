//! The program on the oldest kernel we target in CI: Debian 12's 6.1,
//! booted under qemu by the shared kernel-matrix tool. There, every packet
//! scenario file runs against the real 6.1 verifier and helpers, and the
//! agent attaches (netlink clsact, not TCX), is killed and restarted (its
//! filter replaced in place, never removed first), reports status and
//! detaches on SIGTERM, holding exactly the gateway container's capabilities
//! (NET_ADMIN and BPF), while `status` runs with none; without NET_ADMIN
//! it must refuse to start.
//!
//! The VM's userland has only busybox's `setpriv`, which cannot limit the
//! bounding set (and for uid 0 the bounding set is what decides the
//! capabilities after exec), so the host's util-linux `setpriv` is copied
//! in, with its libraries.
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use egress_common::config::GATEWAY_EPHEMERAL_PORTS;

use crate::run::{status, workspace_root};

/// egress-agent's BPF_PROG_TEST_RUN test files (`tests/prog_*.rs`), all of
/// which run inside the VM: the list is read from the files, so a new
/// scenario file runs there without anyone remembering to add it.
fn packet_scenarios() -> Result<Vec<String>> {
    let dir = workspace_root().join("egress-agent/tests");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter_map(|file| Some(file.strip_suffix(".rs")?.to_string()))
        .filter(|name| name.starts_with("prog_"))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no packet-scenario files (prog_*.rs) in {}", dir.display());
    }
    Ok(names)
}

/// The kernel package; override with EGRESS_TEST_KERNEL.
const DEFAULT_KERNEL: &str = "linux-image-6.1.0-56-amd64";

fn kernel_matrix_tool() -> Option<PathBuf> {
    let tool = workspace_root().join("../shared/tools/kernel-matrix/run-in-kernel.sh");
    tool.exists().then_some(tool)
}

/// Builds the packet-scenario test binaries and returns their paths.
fn packet_scenario_binaries() -> Result<Vec<PathBuf>> {
    let scenarios = packet_scenarios()?;
    let out = Command::new("cargo")
        .args(["test", "--release", "--locked", "-p", "egress-agent", "--no-run", "--message-format=json"])
        .args(scenarios.iter().flat_map(|t| ["--test", t.as_str()]))
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
    if binaries.len() != scenarios.len() {
        bail!(
            "expected {} packet-scenario test binaries ({scenarios:?}), found {binaries:?}",
            scenarios.len()
        );
    }
    Ok(binaries)
}

/// The host's util-linux `setpriv` (busybox's has no `--bounding-set`).
fn util_linux_setpriv() -> Result<PathBuf> {
    let path = egress_tests::tools::which("setpriv")
        .context("setpriv (util-linux) not found: it restricts the agent's capabilities in the VM")?;
    let path = std::fs::canonicalize(&path)?;
    let version = Command::new(&path).arg("--version").output().context("running setpriv --version")?;
    if !String::from_utf8_lossy(&version.stdout).contains("util-linux") {
        bail!("{} is not util-linux's setpriv (no --bounding-set?)", path.display());
    }
    Ok(path)
}

/// `setpriv` arguments leaving exactly `caps` (setpriv's names) to uid 0:
/// inheritable, ambient and bounding sets, and no-new-privs.
fn only_caps(setpriv: &std::path::Path, caps: &[&str]) -> String {
    let set =
        std::iter::once("-all".to_string()).chain(caps.iter().map(|c| format!("+{c}"))).collect::<Vec<_>>();
    let set = set.join(",");
    format!("{} --inh-caps={set} --ambient-caps={set} --bounding-set={set} --no-new-privs", setpriv.display())
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
        // --show-output: what a test measured on this kernel (the
        // verifier's instruction count) is in the log.
        script.push_str(&format!("{} --test-threads=1 --show-output\n", b.display()));
    }
    // The kernel-matrix guest has veth1 (10.99.0.2) in netns `peer`. The
    // agent runs there as the gateway container does: uid 0 with NET_ADMIN,
    // BPF and PERFMON only. `status` gets no capabilities: it asks the agent over
    // HTTP (127.0.0.1:9090, so `peer` needs its loopback up). The tc filter
    // checks apply before 6.6; from 6.6 on the agent attaches with TCX,
    // which `tc filter show` does not list (EGRESS_TEST_KERNEL may be newer).
    // `peer` gets the gateway pod's own ephemeral range, as the manifests
    // set it, so the default NAT range does not overlap it.
    let setpriv = util_linux_setpriv()?;
    script.push_str(&format!(
        "case $(uname -r) in [1-5].*|6.[0-5].*) tcx=0 ;; *) tcx=1 ;; esac\n\
         ip -n peer link set lo up\n\
         ip netns exec peer sh -c 'echo {ephemeral_lo} {ephemeral_hi} > /proc/sys/net/ipv4/ip_local_port_range'\n\
         ip netns exec peer {gateway_caps} {agent} gateway --interface veth1 --pods-file {pods} 2>{log} &\n\
         pid=$!\n\
         for i in 1 2 3 4 5 6 7 8 9 10; do grep -q ready {log} && break; sleep 1; done\n\
         grep ready {log} || {{ echo 'the agent did not get ready with NET_ADMIN+BPF+PERFMON only:'; cat {log}; exit 1; }}\n\
         kill -KILL $pid; wait $pid 2>/dev/null || true\n\
         [ $tcx = 1 ] || ip netns exec peer tc filter show dev veth1 ingress | grep -q egress_gateway || {{ echo 'the killed agent left no filter'; exit 1; }}\n\
         ip netns exec peer {gateway_caps} {agent} gateway --interface veth1 --pods-file {pods} 2>{log2} &\n\
         pid=$!\n\
         for i in 1 2 3 4 5 6 7 8 9 10; do grep -q ready {log2} && break; sleep 1; done\n\
         grep ready {log2} || {{ echo 'the restarted agent did not get ready:'; cat {log2}; exit 1; }}\n\
         if [ $tcx = 0 ]; then\n\
           grep -q 'replaced the running egress_gateway filter on veth1 in place' {log2} || {{ echo 'the filter was not replaced in place:'; cat {log2}; exit 1; }}\n\
           n=$(ip netns exec peer tc filter show dev veth1 ingress | grep -c egress_gateway)\n\
           [ $n = 1 ] || {{ echo \"$n egress_gateway filters after the restart\"; exit 1; }}\n\
           echo 'restart after kill -9: the filter replaced in place, one filter: ok'\n\
         fi\n\
         for set in CapInh CapPrm CapEff CapBnd CapAmb; do\n\
           v=$(awk -v s=$set: '$1 == s {{ print $2 }}' /proc/$pid/status)\n\
           echo \"agent $set $v\"\n\
           [ \"$v\" = 000000c000001000 ] || {{ echo \"agent $set is $v, not NET_ADMIN+BPF+PERFMON\"; exit 1; }}\n\
         done\n\
         grep '^NoNewPrivs:.*1' /proc/$pid/status\n\
         ip netns exec peer {no_caps} {agent} status --interface veth1\n\
         ip netns exec peer {no_caps} {agent} status --interface veth1 --json | grep -q '\"10.99.0.1\"'\n\
         [ $tcx = 1 ] || ip netns exec peer tc filter show dev veth1 ingress | grep -q egress_gateway\n\
         ip -n peer link show dev egressgro-rx >/dev/null || {{ echo 'no GRO stage'; exit 1; }}\n\
         [ $tcx = 1 ] || ip netns exec peer tc filter show dev egressgro-rx ingress | grep -q egress_gro_stage\n\
         kill -TERM $pid; wait $pid\n\
         if [ $tcx = 0 ] && ip netns exec peer tc filter show dev veth1 ingress | grep -q egress_gateway; then echo 'filter left behind'; exit 1; fi\n\
         if ip -n peer link show dev egressgro-rx >/dev/null 2>&1; then echo 'GRO stage left behind'; exit 1; fi\n\
         echo 'attach, status, detach with NET_ADMIN+BPF+PERFMON only (status with none): ok'\n\
         if ip netns exec peer timeout 30 {bpf_only} {agent} gateway --interface veth1 --pods-file {pods} 2>{neg}; then\n\
           echo 'the agent started without NET_ADMIN'; exit 1\n\
         fi\n\
         tail -n 1 {neg}\n\
         tail -n 1 {neg} | grep -q '^egress-agent: error:' || {{ cat {neg}; exit 1; }}\n\
         echo 'without NET_ADMIN: refused with one line: ok'\n\
         if ip netns exec peer timeout 20 {no_perfmon} {agent} gateway --interface veth1 --pods-file {pods} 2>{neg}; [ $? = 124 ]; then\n\
           echo 'without PERFMON: this kernel accepts the program'\n\
         else\n\
           tail -n 1 {neg}\n\
           tail -n 1 {neg} | grep -q 'add PERFMON' || {{ cat {neg}; exit 1; }}\n\
           echo 'without PERFMON: refused, saying to add it: ok'\n\
         fi\n",
        agent = agent.display(),
        pods = pods.display(),
        ephemeral_lo = GATEWAY_EPHEMERAL_PORTS.0,
        ephemeral_hi = GATEWAY_EPHEMERAL_PORTS.1,
        log = work.join("agent.log").display(),
        log2 = work.join("agent-restarted.log").display(),
        neg = work.join("agent-bpf-only.log").display(),
        gateway_caps = only_caps(&setpriv, &["net_admin", "bpf", "perfmon"]),
        no_caps = only_caps(&setpriv, &[]),
        bpf_only = only_caps(&setpriv, &["bpf", "perfmon"]),
        no_perfmon = only_caps(&setpriv, &["net_admin", "bpf"]),
    ));
    let script_path = work.join("run.sh");
    std::fs::write(&script_path, script)?;
    let mut cmd = Command::new("bash");
    cmd.arg(&tool).arg(&kernel);
    for path in binaries.iter().chain([agent.to_path_buf(), pods, script_path.clone(), setpriv].iter()) {
        cmd.arg("--copy").arg(path);
    }
    // Under TCG (no usable KVM, as on this machine and CI's) the scenario
    // files run about 3x slower than natively, and every scenario loads
    // all the programs: with the IPv6 tunnel's copies of the client
    // programs, over 1,200 s for all of them (21 of 23 files by then,
    // measured), so 2,400.
    cmd.arg("--shell-cmd").arg(format!("sh {}", script_path.display())).env("TIMEOUT", "2400");
    let result = status(&mut cmd).with_context(|| format!("the tests on {kernel} failed"));
    let _ = std::fs::remove_dir_all(&work);
    result
}
