//! The real `egress-agent gateway` binary: its memory idle and with many
//! flows, and what sweeping those flows costs it.
//!
//! The agent runs in a namespace whose `eth0` is one end of a veth pair,
//! as in a gateway pod; the other end sits in a "node" namespace, from
//! which tunnelled SYNs of distinct flows are written straight onto the
//! wire with a packet socket. The attached program creates the flows and
//! forwards the SYNs back to the node (which drops them), so the agent
//! sees exactly what a gateway with that many flows has: full conntrack
//! maps to sweep and report. Its memory is read from /proc/PID/status
//! (VmRSS now, VmHWM the peak); the BPF maps are kernel memory and not in
//! it (see the map memory rows).
use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use egress_tests::{
    agent::{agent_binary, Agent},
    netns::unique_prefix,
    scenario::PodsFile,
    Netns,
};

use crate::{
    common::{CLIENT_IP, GATEWAY_IP, GATEWAY_MAC, VNI},
    flows::Flow,
    report::Report,
};

/// The node's end of the veth pair.
const NODE_IFACE: &str = "node0";
const NODE_ADDR: &str = "10.0.0.254";
/// `--gc-interval-s`: short, so readings come soon after a sweep, and long
/// enough for one sweep of 100k flows to finish well within it.
const SWEEP_INTERVAL_S: u64 = 2;
/// How long the agent is left alone before each reading.
const SETTLE: Duration = Duration::from_secs(3);
/// Sweeps timed for the CPU-per-sweep row.
const TIMED_SWEEPS: u64 = 10;

pub fn measure(report: &mut Report, flows: u32) -> Result<()> {
    let binary = agent_binary()?;
    let prefix = unique_prefix();
    let gateway = Netns::create(&format!("{prefix}-gw"))?;
    let node = Netns::create(&format!("{prefix}-node"))?;
    gateway.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", NODE_IFACE, "netns", node.name()])?;
    let gateway_mac = GATEWAY_MAC.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    gateway.ip(&["link", "set", "eth0", "address", &gateway_mac])?;
    gateway.ip(&["addr", "add", &format!("{GATEWAY_IP}/24"), "dev", "eth0"])?;
    gateway.ip(&["link", "set", "eth0", "up"])?;
    gateway.ip(&["route", "add", "default", "via", NODE_ADDR])?;
    // The gateway pod's own ports sit at the top, as the manifests set them.
    let (lo, hi) = egress_common::config::GATEWAY_EPHEMERAL_PORTS;
    gateway.sysctls(&[("net.ipv4.ip_local_port_range", &format!("{lo} {hi}"))])?;
    node.ip(&["addr", "add", &format!("{NODE_ADDR}/24"), "dev", NODE_IFACE])?;
    node.ip(&["link", "set", NODE_IFACE, "up"])?;

    let pods = PodsFile::create()?;
    pods.write(&[(CLIENT_IP, "bench-client")])?;
    let mut args: Vec<String> = vec!["gateway".into(), "--interface".into(), "eth0".into()];
    args.extend(["--pods-file".into(), pods.path().display().to_string()]);
    args.extend(["--vni".into(), VNI.to_string(), "--gc-interval-s".into(), SWEEP_INTERVAL_S.to_string()]);
    // The flows are SYNs nobody answers: keep them past the measurement,
    // all of them from the one client (the whole table is its share).
    args.extend(["--tcp-syn-timeout-s".into(), "3600".into()]);
    args.extend(["--max-flows-per-client".into(), egress_common::maps::CT_MAX_DEFAULT.to_string()]);
    let mut agent = Agent::start(&gateway, &binary, &args)?;
    let pid = agent.pid().context("the agent has no pid")?;

    std::thread::sleep(SETTLE);
    report.add("agent RSS idle (ready, 1 client, no flows)", rss_mib(pid, "VmRSS:")?, "MiB");
    report.add("agent peak RSS (VmHWM) up to then: loading the program", rss_mib(pid, "VmHWM:")?, "MiB");

    let frames: Vec<Vec<u8>> = (0..flows).map(|i| Flow::spread(i).syn()).collect();
    let mut bindings = 0;
    for _attempt in 0..3 {
        // Frames the veth backlog dropped are sent again; flows that
        // exist already just take the established path.
        node.run(|| send_frames(NODE_IFACE, &frames))?;
        bindings = wait_for_bindings(&gateway, flows as u64)?;
        if bindings >= flows as u64 {
            break;
        }
    }
    if bindings < flows as u64 {
        bail!("only {bindings} of {flows} flows were created through the agent's datapath");
    }
    std::thread::sleep(SETTLE);
    let k = flows / 1000;
    report.add(
        format!("agent RSS with {k}k flows (after sweeps and metrics refreshes)"),
        rss_mib(pid, "VmRSS:")?,
        "MiB",
    );

    let cpu_before = cpu_seconds(pid)?;
    let window = Duration::from_secs(SWEEP_INTERVAL_S * TIMED_SWEEPS);
    std::thread::sleep(window);
    let share = (cpu_seconds(pid)? - cpu_before) / window.as_secs_f64();
    if share > 0.9 {
        bail!(
            "the agent was busy {:.0}% of the time: sweeps of {flows} flows overran the interval",
            share * 100.0
        );
    }
    report.add(
        format!("agent CPU with {k}k flows, --gc-interval-s {SWEEP_INTERVAL_S}"),
        share * 100.0,
        "% of a core",
    );
    report.add(
        format!("  = per sweep + metrics refresh of {k}k flows"),
        share * SWEEP_INTERVAL_S as f64 * 1e3,
        "ms",
    );

    let status = agent.status_json()?;
    let listed = status.get("flows").and_then(|f| f.as_array()).map_or(0, Vec::len);
    if listed < flows as usize {
        bail!("status listed {listed} flows, expected {flows}");
    }
    report.add(format!("agent RSS after `status` listed {k}k flows"), rss_mib(pid, "VmRSS:")?, "MiB");
    report.add("agent peak RSS (VmHWM) over the whole run", rss_mib(pid, "VmHWM:")?, "MiB");
    agent.check_running()?;
    agent.stop()?;
    Ok(())
}

/// A `Vm*:` line of /proc/PID/status, in MiB.
fn rss_mib(pid: u32, field: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(kib / 1024.0)
}

/// User + system CPU time of `pid` (all its threads), in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesized command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let after_name = stat.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// `egress_nat_bindings` from the agent's /metrics once it reaches
/// `expected` (it is sampled at every sweep), or whatever it is after a few
/// sweeps.
fn wait_for_bindings(gateway: &Netns, expected: u64) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(SWEEP_INTERVAL_S * 5);
    loop {
        let out = gateway.exec(&["curl", "-sS", "--max-time", "5", "http://127.0.0.1:9090/metrics"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let bindings = text
            .lines()
            .find_map(|l| l.strip_prefix("egress_nat_bindings "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
        if bindings >= expected || Instant::now() > deadline {
            return Ok(bindings);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes `frames` onto `iface` (in the caller's namespace) with a raw
/// packet socket, pausing now and then so the receiving veth's backlog
/// (net.core.netdev_max_backlog) keeps up.
fn send_frames(iface: &str, frames: &[Vec<u8>]) -> Result<()> {
    const BURST: usize = 256;
    let name = std::ffi::CString::new(iface)?;
    // SAFETY: plain libc calls with valid arguments; the fd is owned below.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {iface}: {}", std::io::Error::last_os_error());
    }
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if raw < 0 {
        bail!("packet socket: {}", std::io::Error::last_os_error());
    }
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    for (i, frame) in frames.iter().enumerate() {
        let sent = unsafe {
            libc::sendto(
                socket.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            bail!("sending on {iface}: {}", std::io::Error::last_os_error());
        }
        if i % BURST == BURST - 1 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}
