//! The real `egress-agent` binary, run inside a namespace.
//!
//! The tests exercise the shipped binary through its command-line contract
//! rather than linking the agent crate, so they test what users run:
//!
//! - `egress-agent gateway --interface IFACE --pods-file PATH
//!   [--exclude-cidr CIDR]... [--vni N] [--vxlan-port P] [--nat-ports LO-HI]`
//!   runs in the foreground until SIGTERM/SIGINT and logs a line containing
//!   the word `ready` once the program is attached and the pods file applied;
//! - `egress-agent join --gateway ADDR [--cluster-cidr CIDR]... [--vni N]
//!   [--vxlan-port P] [--ipv6 unreachable|route]` configures a worker pod's
//!   namespace and exits 0;
//! - `egress-agent status --json` prints `{"flows": [...], "counters": {...}}`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use egress_common::config::{DEFAULT_NAT_PORT_MAX, DEFAULT_NAT_PORT_MIN};
use serde_json::Value;

use crate::netns::Netns;
use crate::process::Daemon;

/// Counter names reported by `status --json`, in one place so a rename on
/// the agent side is a one-line change here.
pub mod counters {
    /// Tunnelled packet from a source that is not a listed client.
    pub const DROP_UNKNOWN_CLIENT: &str = "drop_unknown_client";
    /// Packet from a listed client to an excluded destination.
    pub const DROP_EXCLUDED_DESTINATION: &str = "drop_excluded_destination";
    /// Packet decapsulated, SNATed and sent towards the remote.
    pub const FORWARDED_TO_REMOTE: &str = "forwarded_to_remote";
    /// Reply DNATed, encapsulated and sent back to the client.
    pub const FORWARDED_TO_CLIENT: &str = "forwarded_to_client";
}

/// The agent's default NAT port range (`--nat-ports`).
pub const DEFAULT_NAT_PORTS: RangeInclusive<u16> = DEFAULT_NAT_PORT_MIN..=DEFAULT_NAT_PORT_MAX;

/// How long `gateway` may take to log its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The agent binary: `$EGRESS_AGENT_BIN`, else `<target>/release/egress-agent`.
/// Fails with a clear message (how to build it) if it does not exist.
pub fn agent_binary() -> Result<PathBuf> {
    let path = match std::env::var_os("EGRESS_AGENT_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => crate::util::target_dir().join("release").join("egress-agent"),
    };
    if !path.is_file() {
        bail!(
            "egress-agent binary not found at {}: build it first (`cargo xtask build`, \
             i.e. the eBPF object plus `cargo build --release -p egress-agent`) or set EGRESS_AGENT_BIN",
            path.display()
        );
    }
    Ok(path)
}

/// Arguments of `egress-agent gateway`.
#[derive(Clone, Debug)]
pub struct GatewayArgs {
    pub interface: String,
    pub pods_file: PathBuf,
    pub exclude_cidrs: Vec<String>,
    pub vni: Option<u32>,
    pub vxlan_port: Option<u16>,
    pub nat_ports: Option<(u16, u16)>,
    /// Anything else, appended verbatim.
    pub extra: Vec<String>,
}

impl GatewayArgs {
    /// `--interface eth0 --pods-file PATH`, everything else default.
    pub fn new(pods_file: &Path) -> GatewayArgs {
        GatewayArgs {
            interface: crate::topology::POD_IFACE.to_string(),
            pods_file: pods_file.to_path_buf(),
            exclude_cidrs: Vec::new(),
            vni: None,
            vxlan_port: None,
            nat_ports: None,
            extra: Vec::new(),
        }
    }

    /// The full argument list, starting with the `gateway` subcommand.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "gateway".to_string(),
            "--interface".into(),
            self.interface.clone(),
            "--pods-file".into(),
            self.pods_file.display().to_string(),
        ];
        for c in &self.exclude_cidrs {
            a.extend(["--exclude-cidr".into(), c.clone()]);
        }
        if let Some(v) = self.vni {
            a.extend(["--vni".into(), v.to_string()]);
        }
        if let Some(p) = self.vxlan_port {
            a.extend(["--vxlan-port".into(), p.to_string()]);
        }
        if let Some((lo, hi)) = self.nat_ports {
            a.extend(["--nat-ports".into(), format!("{lo}-{hi}")]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// Arguments of `egress-agent join`.
#[derive(Clone, Debug)]
pub struct JoinArgs {
    pub gateway: String,
    pub cluster_cidrs: Vec<String>,
    pub vni: Option<u32>,
    pub vxlan_port: Option<u16>,
}

impl JoinArgs {
    /// The full argument list, starting with the `join` subcommand.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["join".to_string(), "--gateway".into(), self.gateway.clone()];
        for c in &self.cluster_cidrs {
            a.extend(["--cluster-cidr".into(), c.clone()]);
        }
        if let Some(v) = self.vni {
            a.extend(["--vni".into(), v.to_string()]);
        }
        if let Some(p) = self.vxlan_port {
            a.extend(["--vxlan-port".into(), p.to_string()]);
        }
        a
    }
}

/// A running `egress-agent gateway` (or any long-running agent command).
/// Dropping it sends SIGTERM and waits (SIGKILL after 5 s); on a test
/// failure its output is printed.
#[derive(Debug)]
pub struct Agent {
    daemon: Daemon,
    ns_name: String,
    binary: PathBuf,
}

impl Agent {
    /// Starts `binary args...` inside `ns` and waits (up to 20 s) for the
    /// ready line. Fails with the agent's output if it exits or never gets
    /// ready.
    pub fn start<S: AsRef<str>>(ns: &Netns, binary: &Path, args: &[S]) -> Result<Agent> {
        let mut argv = vec![binary.display().to_string()];
        argv.extend(args.iter().map(|a| a.as_ref().to_string()));
        let mut daemon = Daemon::spawn(ns, "egress-agent", &argv)?;
        daemon.wait_for_line("its ready line", READY_TIMEOUT, is_ready_line)?;
        Ok(Agent { daemon, ns_name: ns.name().to_string(), binary: binary.to_path_buf() })
    }

    /// Starts `egress-agent gateway` with `args`.
    pub fn start_gateway(ns: &Netns, binary: &Path, args: &GatewayArgs) -> Result<Agent> {
        Agent::start(ns, binary, &args.to_args())
    }

    /// `egress-agent status --json` run in the agent's namespace, parsed.
    pub fn status_json(&self) -> Result<Value> {
        status_json_in(&self.ns_name, &self.binary)
    }

    /// [`Agent::status_json`] turned into a [`Status`].
    pub fn status(&self) -> Result<Status> {
        Status::from_json(&self.status_json()?)
    }

    /// Everything the agent printed so far.
    pub fn log(&self) -> String {
        self.daemon.log()
    }

    /// Fails with the log if the agent has exited (it should run until stopped).
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.daemon.try_wait()? {
            bail!("egress-agent exited unexpectedly ({status}); its output:\n{}", self.log());
        }
        Ok(())
    }

    /// SIGTERM, wait (SIGKILL after 5 s); returns the exit status.
    pub fn stop(mut self) -> Result<ExitStatus> {
        self.daemon.stop()
    }

    /// Like [`Agent::stop`] but in place (e.g. for an agent owned by an
    /// [`crate::EgressSetup`]); fails if it was already stopped.
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        self.daemon.stop()
    }

    pub fn pid(&self) -> Option<u32> {
        self.daemon.pid()
    }

    /// `kill -9`: the agent dies on the spot, with no chance to clean up
    /// (what a crash or an OOM kill does). Returns once it is dead (a
    /// zombie: its files, and with them its BPF links, are closed); not
    /// reaped.
    pub fn kill_hard(&self) -> Result<()> {
        let pid = self.pid().context("the agent was already stopped")?;
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet
        // (the Daemon reaps it when stopped or dropped).
        if unsafe { libc::kill(pid as i32, libc::SIGKILL) } != 0 {
            return Err(std::io::Error::last_os_error()).context("sending SIGKILL to the agent");
        }
        let dead = || {
            // The state is the field after the parenthesised command name.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
                .unwrap_or(true)
        };
        crate::util::wait_for(
            "the killed agent to die",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || Ok(dead().then_some(())),
        )
    }
}

/// Whether a log line announces readiness: the word `ready` (not `readyz`,
/// not "not ready"), case-insensitive.
pub fn is_ready_line(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-')
        .filter(|w| !w.is_empty())
        .collect();
    words.iter().enumerate().any(|(i, w)| *w == "ready" && (i == 0 || words[i - 1] != "not"))
}

/// `egress-agent status --json` inside namespace `ns_name`.
pub fn status_json_in(ns_name: &str, binary: &Path) -> Result<Value> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns_name])
        .arg(binary)
        .args(["status", "--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running egress-agent status --json")?;
    if !out.status.success() {
        bail!(
            "egress-agent status --json failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!("egress-agent status --json printed invalid JSON: {}", String::from_utf8_lossy(&out.stdout))
    })
}

/// Runs `egress-agent join args...` inside `ns`; fails with its output
/// unless it exits 0.
pub fn join(ns: &Netns, binary: &Path, args: &JoinArgs) -> Result<Output> {
    let mut argv = vec![binary.display().to_string()];
    argv.extend(args.to_args());
    ns.exec(&argv).context("egress-agent join")
}

/// One conntrack entry as reported by `status --json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    pub client_ip: Ipv4Addr,
    pub client_port: u16,
    pub remote_ip: Ipv4Addr,
    pub remote_port: u16,
    /// `tcp`, `udp` or `icmp`.
    pub protocol: String,
    pub nat_port: u16,
    /// As `status` names it: `syn-sent`, `open`, `time-wait`, ...
    pub state: String,
}

/// The parsed `status --json` output.
#[derive(Clone, Debug)]
pub struct Status {
    /// The IPv4 flows (a dual-stack setup's IPv6 ones: [`Status::ipv6_flows`]).
    pub flows: Vec<Flow>,
    pub counters: BTreeMap<String, u64>,
    /// The whole JSON document, for fields the harness does not model.
    pub raw: Value,
}

impl Status {
    /// Parses `{"flows": [...], "counters": {...}}`; extra keys are ignored.
    pub fn from_json(v: &Value) -> Result<Status> {
        let flows = v
            .get("flows")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("status JSON has no `flows` array: {v}"))?
            .iter()
            .filter(|flow| !is_ipv6_flow(flow))
            .map(Flow::from_json)
            .collect::<Result<Vec<_>>>()?;
        let counters = v
            .get("counters")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow!("status JSON has no `counters` object: {v}"))?
            .iter()
            .map(|(k, n)| {
                n.as_u64()
                    .map(|n| (k.clone(), n))
                    .ok_or_else(|| anyhow!("counter {k} is not a non-negative integer: {n}"))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        Ok(Status { flows, counters, raw: v.clone() })
    }

    /// Counter `name`; fails (listing the known names) if it is absent, so a
    /// renamed counter is reported as such rather than read as zero.
    pub fn counter(&self, name: &str) -> Result<u64> {
        self.counters.get(name).copied().ok_or_else(|| {
            anyhow!(
                "status has no counter {name:?}; it has: {}",
                self.counters.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// Counter `name`, or 0 if the agent does not report it (yet): for
    /// baselines taken before any traffic. Read the value after the traffic
    /// with [`Status::counter`], which insists the counter exists.
    pub fn counter_or_zero(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// The IPv6 flows, as `status --json` gives them.
    pub fn ipv6_flows(&self) -> impl Iterator<Item = &Value> {
        self.raw["flows"].as_array().into_iter().flatten().filter(|flow| is_ipv6_flow(flow))
    }

    /// Flows of client `ip` with protocol `protocol`.
    pub fn flows_of<'a>(&'a self, ip: Ipv4Addr, protocol: &'a str) -> impl Iterator<Item = &'a Flow> + 'a {
        self.flows.iter().filter(move |f| f.client_ip == ip && f.protocol == protocol)
    }
}

/// A flow of a client's IPv6 address (a dual-stack pod's).
fn is_ipv6_flow(flow: &Value) -> bool {
    flow["client_ip"].as_str().is_some_and(|ip| ip.contains(':'))
}

impl Flow {
    fn from_json(v: &Value) -> Result<Flow> {
        let ip = |k: &str| -> Result<Ipv4Addr> {
            v.get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("flow has no string {k}: {v}"))?
                .parse()
                .with_context(|| format!("flow {k} is not an IPv4 address: {v}"))
        };
        let port = |k: &str| -> Result<u16> {
            v.get(k)
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| anyhow!("flow has no 16-bit {k}: {v}"))
        };
        Ok(Flow {
            client_ip: ip("client_ip")?,
            client_port: port("client_port")?,
            remote_ip: ip("remote_ip")?,
            remote_port: port("remote_port")?,
            protocol: v
                .get("protocol")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("flow has no protocol: {v}"))?
                .to_ascii_lowercase(),
            nat_port: port("nat_port")?,
            state: v.get("state").and_then(Value::as_str).unwrap_or_default().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_detection() {
        assert!(is_ready_line("2024-01-01 INFO egress_agent: ready interface=eth0"));
        assert!(is_ready_line("Ready."));
        assert!(!is_ready_line("serving /healthz and /readyz on :9090"));
        assert!(!is_ready_line("not ready yet: attaching"));
        assert!(!is_ready_line("already attached"));
    }

    #[test]
    fn parse_status() {
        let v: Value = serde_json::json!({
            "flows": [{"client_ip": "10.244.1.11", "client_port": 40000,
                       "remote_ip": "198.51.100.10", "remote_port": 80,
                       "protocol": "tcp", "nat_port": 12345, "state": "established"}],
            "counters": {"drop_unknown_client": 3, "forwarded_to_remote": 10}
        });
        let s = Status::from_json(&v).unwrap();
        assert_eq!(s.flows[0].nat_port, 12345);
        assert_eq!(s.counter(counters::DROP_UNKNOWN_CLIENT).unwrap(), 3);
        assert!(s.counter("nope").unwrap_err().to_string().contains("forwarded_to_remote"));
        assert_eq!(s.flows_of("10.244.1.11".parse().unwrap(), "tcp").count(), 1);
    }

    #[test]
    fn args() {
        let mut g = GatewayArgs::new(Path::new("/tmp/pods"));
        g.exclude_cidrs.push("198.51.100.0/24".into());
        g.nat_ports = Some((20000, 30000));
        assert_eq!(
            g.to_args().join(" "),
            "gateway --interface eth0 --pods-file /tmp/pods --exclude-cidr 198.51.100.0/24 --nat-ports 20000-30000"
        );
        let j = JoinArgs {
            gateway: "10.96.0.10".into(),
            cluster_cidrs: vec!["10.244.0.0/16".into()],
            vni: None,
            vxlan_port: None,
        };
        assert_eq!(j.to_args().join(" "), "join --gateway 10.96.0.10 --cluster-cidr 10.244.0.0/16");
    }
}
