//! Least privilege, proven: the gateway container gets exactly NET_ADMIN, BPF
//! and PERFMON (deploy/base/gateway-deployment.yaml, pinned by manifests.rs),
//! so the real agent must load, attach, serve and detach with only those, and
//! `egress-agent status` (what an operator runs with `kubectl exec`) must
//! work with none at all. The agent runs under `setpriv` with inheritable,
//! ambient and bounding sets limited and no-new-privs, as uid 0 like the
//! container; a negative control shows the restriction really bites.
//! This proves it on the machine's kernel; `cargo xtask test` repeats the
//! attach under the same restriction on Debian's 6.1 (xtask/src/kernels.rs).

use std::path::{Path, PathBuf};
use std::process::Output;

use egress_common::config::GATEWAY_EPHEMERAL_PORTS;
use egress_tests::agent::{agent_binary, is_ready_line, READY_TIMEOUT};
use egress_tests::netns::unique_prefix;
use egress_tests::scenario::PodsFile;
use egress_tests::{require_root, tools, Daemon, Netns};

const GATEWAY_ADDR: &str = "10.77.0.2/24";
const CLIENT: &str = "10.77.0.9";
/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
/// The gateway container's capabilities, as setpriv names them.
const GATEWAY_CAPS: &[&str] = &["net_admin", "bpf", "perfmon"];

/// `setpriv` leaving exactly `caps` (names as setpriv spells them, e.g.
/// `net_admin`): inheritable, ambient and bounding sets, so that uid 0's
/// permitted and effective sets after exec are these too; no-new-privs so
/// nothing regains more.
fn with_only(caps: &[&str]) -> Vec<String> {
    let set: String = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "setpriv".into(),
        format!("--inh-caps={set}"),
        format!("--ambient-caps={set}"),
        format!("--bounding-set={set}"),
        "--no-new-privs".into(),
    ]
}

/// A fresh namespace whose `eth0` (one end of a veth pair; the peer stays in
/// the namespace) has an IPv4 address and whose own ephemeral ports sit at
/// the top, like a gateway pod's (the manifests' sysctl).
fn pod_namespace() -> Netns {
    if let Err(e) = require_root() {
        panic!("{e:#}");
    }
    tools::ensure_packages().unwrap();
    assert!(tools::which("setpriv").is_some(), "setpriv (util-linux) is needed");
    let ns = Netns::create(&format!("{}-gw", unique_prefix())).unwrap();
    ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]).unwrap();
    ns.ip(&["addr", "add", GATEWAY_ADDR, "dev", "eth0"]).unwrap();
    ns.ip(&["link", "set", "eth0", "up"]).unwrap();
    ns.ip(&["link", "set", "peer0", "up"]).unwrap();
    let (lo, hi) = GATEWAY_EPHEMERAL_PORTS;
    ns.sysctls(&[("net.ipv4.ip_local_port_range", &format!("{lo} {hi}"))]).unwrap();
    ns
}

fn pods_file() -> PodsFile {
    let pods = PodsFile::create().unwrap();
    pods.write(&[(CLIENT.parse().unwrap(), "worker-a")]).unwrap();
    pods
}

/// `setpriv <caps> egress-agent gateway --interface eth0 --pods-file PATH`.
fn gateway_argv(caps: &[&str], agent: &Path, pods: &Path) -> Vec<String> {
    let mut argv = with_only(caps);
    argv.extend([agent.display().to_string(), "gateway".into(), "--interface".into(), "eth0".into()]);
    argv.extend(["--pods-file".into(), pods.display().to_string()]);
    argv
}

/// The capability lines of /proc/PID/status, as numbers.
fn capabilities(status: &str) -> Vec<(String, u64)> {
    status
        .lines()
        .filter(|l| l.starts_with("Cap"))
        .map(|l| {
            let (name, hex) = l.split_once(':').unwrap();
            (name.to_string(), u64::from_str_radix(hex.trim(), 16).unwrap())
        })
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn binary() -> PathBuf {
    agent_binary().unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn gateway_runs_with_the_containers_capabilities_only_and_status_needs_none() {
    let ns = pod_namespace();
    let pods = pods_file();
    let agent = binary();
    let mut gateway =
        Daemon::spawn(&ns, "egress-agent", &gateway_argv(GATEWAY_CAPS, &agent, pods.path())).unwrap();
    gateway.wait_for_line("its ready line", READY_TIMEOUT, is_ready_line).unwrap();

    // The restriction took: the agent holds NET_ADMIN, BPF and PERFMON and
    // nothing else in every set, cannot gain more, and is still uid 0.
    let pid = gateway.pid().unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let exactly = (1u64 << CAP_NET_ADMIN) | (1u64 << CAP_BPF) | (1u64 << CAP_PERFMON);
    for (set, value) in capabilities(&proc_status) {
        assert_eq!(
            value, exactly,
            "{set} of the running agent is {value:#x}, not NET_ADMIN+BPF+PERFMON ({exactly:#x})"
        );
    }
    assert!(proc_status.lines().any(|l| l.split_whitespace().eq(["NoNewPrivs:", "1"])), "no-new-privs set");
    assert!(proc_status.lines().any(|l| l.starts_with("Uid:\t0\t")), "uid 0, like the container");

    // (a) status with no capabilities at all: it asks the agent over HTTP.
    let mut argv = with_only(&[]);
    argv.extend(["grep".into(), "^Cap".into(), "/proc/self/status".into()]);
    let own = text(&ns.exec(&argv).unwrap().stdout);
    assert!(
        capabilities(&own).iter().all(|(_, v)| *v == 0),
        "the status command's prefix drops everything:\n{own}"
    );
    let mut argv = with_only(&[]);
    argv.extend([agent.display().to_string(), "status".into(), "--json".into()]);
    let out = ns.output(&argv).unwrap();
    assert!(
        out.status.success(),
        "status without capabilities failed ({}): {}",
        out.status,
        text(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json printed invalid JSON ({e}): {}", text(&out.stdout)));
    assert_eq!(json["clients"], serde_json::json!([CLIENT]), "the listed client, in: {json}");
    assert_eq!(json["interface"], "eth0");
    assert!(json["counters"].is_object(), "counters in: {json}");

    // (b) the probes and the scrape.
    let code = ns
        .exec(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "http://127.0.0.1:9090/readyz",
        ])
        .unwrap();
    assert_eq!(text(&code.stdout), "200", "/readyz");
    let metrics =
        text(&ns.exec(&["curl", "-sS", "--max-time", "5", "http://127.0.0.1:9090/metrics"]).unwrap().stdout);
    assert!(metrics.lines().any(|l| l == "egress_ready 1"), "egress_ready 1 in /metrics:\n{metrics}");

    // Detaching on SIGTERM works with the same capabilities.
    let exit = gateway.stop().unwrap();
    assert!(exit.success(), "the agent exits 0 on SIGTERM, got {exit}; its output:\n{}", gateway.log());
}

/// The negative control: without NET_ADMIN the kernel refuses to load a TC
/// classifier, so the same command must fail, with one clear line. If this
/// passed, the positive test above would prove nothing.
#[test]
fn gateway_without_net_admin_refuses_to_start_with_one_line() {
    let ns = pod_namespace();
    let pods = pods_file();
    let agent = binary();
    // `timeout`: an agent that started after all would otherwise run forever.
    let mut argv = vec!["timeout".to_string(), "30".into()];
    argv.extend(gateway_argv(&["bpf", "perfmon"], &agent, pods.path()));
    let out: Output = ns.output(&argv).unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "the agent started without NET_ADMIN; its output:\n{stderr}");
    assert_ne!(out.status.code(), Some(124), "the agent ran until `timeout` stopped it:\n{stderr}");
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(last.starts_with("egress-agent: error:"), "last line of stderr: {last:?}; all of it:\n{stderr}");
    assert!(last.contains("CAP_NET_ADMIN"), "the error names the missing capability: {last:?}");
}

/// The container runtime's own default seccomp profile (CRI-O's, podman's,
/// containerd's before 1.7) refuses bpf(2) without CAP_SYS_ADMIN, which the
/// gateway does not get: the agent, with exactly the container's
/// capabilities under such a filter, must name the profile as the cause
/// and the component that lifts it, in one line, rather than ask for
/// capabilities it already has.
#[test]
fn gateway_under_a_seccomp_profile_that_refuses_bpf_names_the_profile_in_one_line() {
    let ns = pod_namespace();
    let pods = pods_file();
    let agent = binary();
    let mut argv = vec!["timeout".to_string(), "30".into()];
    argv.extend(with_only(GATEWAY_CAPS));
    argv.push(env!("CARGO_BIN_EXE_no-bpf").into());
    argv.extend(
        gateway_argv(GATEWAY_CAPS, &agent, pods.path()).into_iter().skip(with_only(GATEWAY_CAPS).len()),
    );
    let out: Output = ns.output(&argv).unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "the agent started under the filter; its output:\n{stderr}");
    assert_ne!(out.status.code(), Some(124), "the agent ran until `timeout` stopped it:\n{stderr}");
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(last.starts_with("egress-agent: error:"), "last line of stderr: {last:?}; all of it:\n{stderr}");
    assert!(last.contains("seccomp profile"), "the error names the profile: {last:?}");
    assert!(last.contains("deploy/components/seccomp-unconfined"), "and the component to add: {last:?}");
    assert!(!last.contains("needs CAP_BPF"), "it does not blame the capabilities: {last:?}");
}
