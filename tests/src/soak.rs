//! The soak: minutes of mixed traffic through the gateway (many short TCP
//! connections, one long stream, a steady trickle of new UDP flows), then
//! silence. Afterwards the conntrack must empty on its own once the idle
//! timeouts pass, and the agent's memory must not have grown with the
//! traffic. `cargo xtask soak` runs it for ten minutes; the tests crate's
//! `soak` test for under a minute.

use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::clients::{self, Iperf3Options};
use crate::load::{conn_rate, start_conn_server, CONN_RATE_PORT, CONN_RATE_PORTS};
use crate::scenario::{EgressSetup, GatewayOptions};

/// The gateway's idle timeouts during a soak, short so that the table must
/// empty soon after the traffic stops (established TCP keeps its default:
/// the long stream is idle never, and ends with FINs). TIME_WAIT is the
/// exception: the server closes first and holds TIME_WAIT for Linux's 60 s,
/// which its timer wheel may end up to 12.5 % late (61 s still let a few
/// dozen SYNs in ten minutes be refused), and a NAT port released sooner
/// has its next client's SYN refused (PAWS).
pub const SOAK_TIMEOUTS: &[(&str, &str)] = &[
    ("--tcp-syn-timeout-s", "5"),
    ("--tcp-closing-timeout-s", "3"),
    ("--tcp-time-wait-timeout-s", "70"),
    ("--udp-timeout-s", "3"),
    ("--icmp-timeout-s", "3"),
    ("--gc-interval-s", "1"),
    // Room for every port held in TIME_WAIT at SHORT_CONNECTION_RATE, all
    // of it for the one client that makes the short connections.
    ("--conntrack-size", "262144"),
    ("--max-flows-per-client", "262144"),
];
/// Longest of those, plus sweeps: when the table must be empty.
const DRAIN: Duration = Duration::from_secs(70 + 3);
/// Short connections per second: 70 s of them held in TIME_WAIT is at most
/// 140k bindings, 8.75k NAT ports per server port (of 22.5k).
const SHORT_CONNECTION_RATE: f64 = 2000.0;

#[derive(Clone, Debug)]
pub struct SoakReport {
    pub secs: f64,
    /// Short connections completed, and failed.
    pub connections: u64,
    pub connection_errors: u64,
    /// What the first failed short connection said (empty if none).
    pub first_connection_error: String,
    /// Bytes of the long stream.
    pub stream_bytes: u64,
    /// UDP flows opened (one request/answer each), and unanswered.
    pub udp_flows: u64,
    pub udp_errors: u64,
    /// (seconds since start, agent VmRSS KiB, NAT bindings) every sample.
    pub samples: Vec<(f64, u64, u64)>,
    /// Bindings left when the traffic stopped, and after the timeouts.
    pub bindings_at_stop: u64,
    pub bindings_after_drain: u64,
    /// Datapath drops during the soak, by counter.
    pub drops: Vec<(String, u64)>,
    /// The TCP stacks' own trouble counters, non-zero ones only, as
    /// `server:Name` or `client:Name`: what to read when a short connection
    /// failed without any datapath drop (a full accept queue, a SYN the
    /// server's TIME_WAIT refused, a retransmitted SYN).
    pub tcp_trouble: Vec<(String, u64)>,
}

/// TcpExt counters (/proc/net/netstat) that explain a slow or failed
/// connection on a path where the gateway dropped nothing.
const TCP_TROUBLE_COUNTERS: &[&str] = &[
    "ListenOverflows",
    "ListenDrops",
    "PAWSActive",
    "PAWSEstab",
    "PAWSTimewait",
    "TCPTimeWaitOverflow",
    "TCPSYNChallenge",
    "TCPChallengeACK",
    "TCPSynRetrans",
    "TCPAbortOnTimeout",
    "TCPAbortOnData",
    "TCPAbortOnClose",
    "TCPAbortFailed",
];

impl SoakReport {
    /// Agent RSS: the highest in the first third after warm-up, and the
    /// highest in the last third of the traffic.
    pub fn rss_first_and_last_kib(&self) -> (u64, u64) {
        let n = self.samples.len();
        let third = (n / 3).max(1);
        let first = self.samples.iter().skip(1).take(third).map(|s| s.1).max().unwrap_or(0);
        let last = self.samples.iter().skip(n.saturating_sub(third)).map(|s| s.1).max().unwrap_or(0);
        (first, last)
    }

    pub fn describe(&self) -> String {
        let (first, last) = self.rss_first_and_last_kib();
        let peak_bindings = self.samples.iter().map(|s| s.2).max().unwrap_or(0);
        format!(
            "soak of {:.0} s: {} short connections ({} failed{}), long stream {:.1} GB, {} UDP flows ({} unanswered); \
             NAT bindings peak {peak_bindings}, {} at stop, {} after {} s; agent RSS {:.1} MiB early, {:.1} MiB late; drops: {}; TCP trouble counters: {}",
            self.secs,
            self.connections,
            self.connection_errors,
            if self.first_connection_error.is_empty() {
                String::new()
            } else {
                format!(", the first: {}", self.first_connection_error)
            },
            self.stream_bytes as f64 / 1e9,
            self.udp_flows,
            self.udp_errors,
            self.bindings_at_stop,
            self.bindings_after_drain,
            DRAIN.as_secs(),
            first as f64 / 1024.0,
            last as f64 / 1024.0,
            counter_list(&self.drops),
            counter_list(&self.tcp_trouble),
        )
    }
}

/// Runs the soak for `duration` on the default cluster, sampling every
/// `sample_every`. `options` gives the agent and echo binaries.
pub fn run(options: GatewayOptions, duration: Duration, sample_every: Duration) -> Result<SoakReport> {
    let mut options = options;
    for (flag, value) in SOAK_TIMEOUTS {
        options.extra_args.extend([flag.to_string(), value.to_string()]);
    }
    let s = EgressSetup::start(options).context("starting the soak cluster")?;
    let server = s.server_ip();
    let outside = s.cluster.outside().clone();
    let _conn_server =
        start_conn_server(&outside, SocketAddrV4::new(server, CONN_RATE_PORT), CONN_RATE_PORTS)?;
    let _iperf = clients::start_iperf3_server(&outside, server)?;
    let pid = s.agent.pid().context("the agent is not running")?;

    let stop = AtomicBool::new(false);
    let (connections, connection_errors) = (AtomicU64::new(0), AtomicU64::new(0));
    let (udp_flows, udp_errors) = (AtomicU64::new(0), AtomicU64::new(0));
    let first_connection_error = std::sync::Mutex::new(String::new());
    let started = Instant::now();
    let mut samples = Vec::new();
    let stream = std::thread::scope(|scope| -> Result<clients::Throughput> {
        let stream = scope.spawn(|| {
            let opts = Iperf3Options { secs: duration.as_secs_f64(), streams: 1, reverse: false };
            clients::iperf3_with(&s.pod("w3").ns, server, &opts)
        });
        let short = scope.spawn(|| -> Result<()> {
            while !stop.load(Ordering::Relaxed) {
                let left = duration.saturating_sub(started.elapsed()).as_secs_f64().min(10.0);
                if left < 1.0 {
                    break;
                }
                let r = conn_rate(
                    &s.pod("w1").ns,
                    SocketAddrV4::new(server, CONN_RATE_PORT),
                    CONN_RATE_PORTS,
                    4,
                    left,
                    Some(SHORT_CONNECTION_RATE),
                )?;
                connections.fetch_add(r.connections, Ordering::Relaxed);
                connection_errors.fetch_add(r.errors, Ordering::Relaxed);
                if r.errors > 0 {
                    let mut first = first_connection_error.lock().unwrap_or_else(|e| e.into_inner());
                    if first.is_empty() {
                        *first = r.first_error.clone();
                    }
                }
            }
            Ok(())
        });
        let udp = scope.spawn(|| {
            // A new socket each time: a new UDP flow, which must expire.
            while !stop.load(Ordering::Relaxed) {
                udp_flows.fetch_add(1, Ordering::Relaxed);
                if clients::udp_echo(&s.pod("w1").ns, s.udp_server(), Duration::from_secs(2)).is_err() {
                    udp_errors.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        while started.elapsed() < duration {
            std::thread::sleep(sample_every.min(duration.saturating_sub(started.elapsed())));
            samples.push((started.elapsed().as_secs_f64(), rss_kib(pid)?, nat_bindings(&s)?));
        }
        stop.store(true, Ordering::Relaxed);
        udp.join().expect("udp thread");
        short.join().expect("connection thread")?;
        stream.join().expect("stream thread")
    })?;
    let secs = started.elapsed().as_secs_f64();
    let bindings_at_stop = s.status()?.flows.len() as u64;
    std::thread::sleep(DRAIN);
    let status = s.status()?;
    let mut tcp_trouble = Vec::new();
    for (side, ns) in [("server", &outside), ("client", &s.pod("w1").ns)] {
        for (name, value) in ns.tcp_ext_counters()? {
            if value > 0 && TCP_TROUBLE_COUNTERS.contains(&name.as_str()) {
                tcp_trouble.push((format!("{side}:{name}"), value));
            }
        }
    }
    let drops = status
        .counters
        .iter()
        .filter(|(n, v)| n.starts_with("drop_") && **v > 0)
        .map(|(n, v)| (n.clone(), *v))
        .collect();
    Ok(SoakReport {
        secs,
        connections: connections.into_inner(),
        connection_errors: connection_errors.into_inner(),
        first_connection_error: first_connection_error.into_inner().unwrap_or_else(|e| e.into_inner()),
        stream_bytes: stream.bytes_received,
        udp_flows: udp_flows.into_inner(),
        udp_errors: udp_errors.into_inner(),
        samples,
        bindings_at_stop,
        bindings_after_drain: status.flows.len() as u64,
        drops,
        tcp_trouble,
    })
}

fn counter_list(counters: &[(String, u64)]) -> String {
    if counters.is_empty() {
        return "none".to_string();
    }
    counters.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(", ")
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("reading the agent's status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// `egress_nat_bindings` from the agent's /metrics (cheap: sampled at each
/// sweep, unlike `status`, which lists every flow).
fn nat_bindings(s: &EgressSetup) -> Result<u64> {
    let out =
        s.cluster.gateway().ns.output(&["curl", "-s", "--max-time", "5", "http://127.0.0.1:9090/metrics"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    match text.lines().find_map(|l| l.strip_prefix("egress_nat_bindings ")) {
        Some(v) => Ok(v.trim().parse().context("egress_nat_bindings")?),
        None => bail!("no egress_nat_bindings in /metrics: {}", text.chars().take(200).collect::<String>()),
    }
}
