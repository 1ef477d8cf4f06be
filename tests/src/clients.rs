//! Real clients and servers used to push traffic through the topology, with
//! their results parsed.
//!
//! The outside echo server (`src/bin/echo-server.rs`) answers every HTTP
//! request and every UDP datagram with `<client ip> <client port>\n`, i.e.
//! the source address it saw: that is what tells a test whether the gateway
//! rewrote the source.

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::netns::Netns;
use crate::process::Daemon;

/// HTTP port of the echo server.
pub const ECHO_HTTP_PORT: u16 = 80;
/// UDP port of the echo server.
pub const ECHO_UDP_PORT: u16 = 5353;
/// iperf3's default port.
pub const IPERF3_PORT: u16 = 5201;

/// What the echo server saw: the client's address and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EchoReply {
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl FromStr for EchoReply {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<EchoReply> {
        let mut it = s.split_whitespace();
        let (Some(ip), Some(port), None) = (it.next(), it.next(), it.next()) else {
            bail!("not an echo reply (`<ip> <port>`): {s:?}");
        };
        Ok(EchoReply {
            ip: ip.parse().with_context(|| format!("bad IP in echo reply {s:?}"))?,
            port: port.parse().with_context(|| format!("bad port in echo reply {s:?}"))?,
        })
    }
}

impl fmt::Display for EchoReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.ip, self.port)
    }
}

/// The echo server binary: `$ECHO_SERVER_BIN`, else `<target>/release` or
/// `<target>/debug` `echo-server`. Integration tests pass
/// `env!("CARGO_BIN_EXE_echo-server")` instead.
pub fn echo_server_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ECHO_SERVER_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let target = crate::util::target_dir();
    ["release", "debug"]
        .iter()
        .map(|profile| target.join(profile).join("echo-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "echo-server not found under {}: run `cargo build -p egress-tests --bin echo-server` \
                 or set ECHO_SERVER_BIN",
                target.display()
            )
        })
}

/// Starts the echo server in `ns`, listening on each of `binds`, and waits
/// until it is listening.
pub fn start_echo_server(ns: &Netns, binary: &Path, binds: &[Ipv4Addr]) -> Result<Daemon> {
    let mut args = vec![binary.display().to_string()];
    for ip in binds {
        args.extend(["--bind".to_string(), ip.to_string()]);
    }
    let mut d = Daemon::spawn(ns, "echo-server", &args)?;
    d.wait_for_line("listening", Duration::from_secs(10), |l| l.contains("echo-server ready"))?;
    Ok(d)
}

/// Starts `iperf3 -s` bound to `bind` in `ns` and waits until it listens.
pub fn start_iperf3_server(ns: &Netns, bind: Ipv4Addr) -> Result<Daemon> {
    start_iperf3_server_on(ns, bind.into())
}

/// [`start_iperf3_server`] on an address of either family.
pub fn start_iperf3_server_on(ns: &Netns, bind: IpAddr) -> Result<Daemon> {
    let bind = bind.to_string();
    let mut d = Daemon::spawn(ns, "iperf3-server", &["iperf3", "-s", "-B", &bind, "--forceflush"])?;
    d.wait_for_line("listening", Duration::from_secs(10), |l| l.contains("Server listening"))?;
    Ok(d)
}

/// `curl` from `ns`; returns the body. `timeout` bounds the whole transfer.
pub fn curl(ns: &Netns, url: &str, timeout: Duration) -> Result<String> {
    let t = format!("{:.1}", timeout.as_secs_f64());
    let out = ns.output(&["curl", "-sS", "--max-time", &t, url])?;
    if !out.status.success() {
        bail!(
            "curl {url} from {} failed ({}): {}",
            ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `curl http://server:80/` against the echo server; returns what it saw.
pub fn curl_echo(ns: &Netns, server: Ipv4Addr, timeout: Duration) -> Result<EchoReply> {
    curl(ns, &format!("http://{server}:{ECHO_HTTP_PORT}/"), timeout)?.parse()
}

/// `curl http://[server]:80/` against the echo server over IPv6; returns
/// the address and port it saw.
pub fn curl_echo6(ns: &Netns, server: Ipv6Addr, timeout: Duration) -> Result<SocketAddrV6> {
    let body = curl(ns, &format!("http://[{server}]:{ECHO_HTTP_PORT}/"), timeout)?;
    let mut it = body.split_whitespace();
    let (Some(ip), Some(port), None) = (it.next(), it.next(), it.next()) else {
        bail!("not an echo reply (`<ip> <port>`): {body:?}");
    };
    let ip: Ipv6Addr = ip.parse().with_context(|| format!("not an IPv6 address in echo reply {body:?}"))?;
    let port: u16 = port.parse().with_context(|| format!("bad port in echo reply {body:?}"))?;
    Ok(SocketAddrV6::new(ip, port, 0, 0))
}

/// Result of many sequential short connections.
#[derive(Clone, Debug, Default)]
pub struct BulkCurl {
    pub replies: Vec<EchoReply>,
    pub failures: usize,
}

/// `count` sequential curls to the echo server from one shell inside `ns`
/// (one process spawn per curl, no `ip netns exec` per request), each with
/// its own `timeout`.
pub fn curl_echo_many(ns: &Netns, server: Ipv4Addr, count: usize, timeout: Duration) -> Result<BulkCurl> {
    let script = format!(
        "i=0; while [ $i -lt {count} ]; do i=$((i+1)); \
         curl -s --max-time {t:.1} http://{server}:{ECHO_HTTP_PORT}/ || echo FAIL; echo; done",
        t = timeout.as_secs_f64()
    );
    let out = ns.sh(&script)?;
    let mut result = BulkCurl::default();
    for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()) {
        match line.parse() {
            Ok(reply) => result.replies.push(reply),
            Err(_) => result.failures += 1,
        }
    }
    if result.replies.len() + result.failures != count {
        bail!(
            "expected {count} results, got {} replies and {} failures",
            result.replies.len(),
            result.failures
        );
    }
    Ok(result)
}

/// A UDP socket created inside `ns` (usable from any thread afterwards).
pub fn udp_socket(ns: &Netns) -> Result<UdpSocket> {
    ns.run(|| Ok(UdpSocket::bind("0.0.0.0:0")?))
}

/// A TCP connection opened from inside `ns`. The stream can be held open
/// (e.g. to observe the flow in `status`) and used from the calling thread.
pub fn tcp_connect(ns: &Netns, to: SocketAddrV4, timeout: Duration) -> Result<TcpStream> {
    ns.run(move || {
        let s = TcpStream::connect_timeout(&SocketAddr::V4(to), timeout)
            .with_context(|| format!("connecting to {to}"))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(s)
    })
}

/// Sends one HTTP request on an open connection to the echo server and
/// returns what it saw (the connection is closed by the server afterwards).
pub fn http_echo_on(mut stream: TcpStream) -> Result<EchoReply> {
    stream.write_all(b"GET / HTTP/1.0\r\nHost: echo\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response).context("reading the HTTP response")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| anyhow!("malformed HTTP response: {response:?}"))?;
    body.parse()
}

/// One UDP request/response with the echo server from inside `ns`, using a
/// connected socket (so a reply from any other address is not accepted).
pub fn udp_echo(ns: &Netns, server: SocketAddrV4, timeout: Duration) -> Result<EchoReply> {
    let sock = udp_socket(ns)?;
    udp_echo_on(&sock, server, timeout)
}

/// [`udp_echo`] on an existing socket (to reuse one source port).
pub fn udp_echo_on(sock: &UdpSocket, server: SocketAddrV4, timeout: Duration) -> Result<EchoReply> {
    sock.connect(server)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send(b"hello\n")?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).with_context(|| format!("no UDP reply from {server} within {timeout:?}"))?;
    String::from_utf8_lossy(&buf[..n]).parse()
}

/// The same exchange with the real `nc -u -w1` (netcat-openbsd).
pub fn nc_udp_echo(ns: &Netns, server: SocketAddrV4) -> Result<EchoReply> {
    let script = format!("echo hello | nc -u -w1 {} {}", server.ip(), server.port());
    let out = ns.output(&["sh", "-c", &script])?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| !l.trim().is_empty())
        .ok_or_else(|| {
            anyhow!(
                "nc -u got no reply from {server} ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?
        .parse()
}

/// `ping -c count` from `ns`; fails unless every echo is answered.
pub fn ping(ns: &Netns, dst: Ipv4Addr, count: u32) -> Result<()> {
    ping_ip(ns, dst.into(), count)
}

/// [`ping`] to an address of either family (ping picks ICMPv6 for an
/// IPv6 one).
pub fn ping_ip(ns: &Netns, dst: IpAddr, count: u32) -> Result<()> {
    let out =
        ns.output(&["ping", "-n", "-q", "-c", &count.to_string(), "-i", "0.2", "-W", "2", &dst.to_string()])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let summary = text.lines().find(|l| l.contains("transmitted")).unwrap_or("").trim();
    let all = format!("{count} received");
    if !out.status.success() || !summary.contains(&all) {
        bail!(
            "ping {dst} from {} failed: {summary} {}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A bulk TCP transfer measured by iperf3 (`-J`).
#[derive(Clone, Copy, Debug)]
pub struct Throughput {
    /// Bits per second received (by the server, or by the client with `-R`).
    pub bits_per_second: f64,
    /// Bytes received, all streams together.
    pub bytes_received: u64,
    /// TCP retransmissions reported by the sender, when available.
    pub retransmits: Option<u64>,
}

/// How to run `iperf3 -c`.
#[derive(Clone, Copy, Debug)]
pub struct Iperf3Options {
    pub secs: f64,
    /// Parallel streams (`-P`).
    pub streams: u32,
    /// Server sends, client receives (`-R`).
    pub reverse: bool,
}

/// Bytes per interval in an `iperf3 -J` report.
pub fn interval_bytes(report: &serde_json::Value) -> Vec<u64> {
    report["intervals"]
        .as_array()
        .map(|all| all.iter().filter_map(|i| i["sum"]["bytes"].as_u64()).collect())
        .unwrap_or_default()
}

/// `iperf3 -c server -t secs [-R]` from `ns`.
pub fn iperf3(ns: &Netns, server: Ipv4Addr, secs: u32, reverse: bool) -> Result<Throughput> {
    iperf3_with(ns, server, &Iperf3Options { secs: secs as f64, streams: 1, reverse })
}

/// `iperf3 -c server -t secs -P streams [-R]` from `ns`.
pub fn iperf3_with(ns: &Netns, server: Ipv4Addr, options: &Iperf3Options) -> Result<Throughput> {
    iperf3_to(ns, server.into(), options)
}

/// [`iperf3_with`] to a server of either family.
pub fn iperf3_to(ns: &Netns, server: IpAddr, options: &Iperf3Options) -> Result<Throughput> {
    let mut args = vec![
        "iperf3".to_string(),
        "-c".into(),
        server.to_string(),
        "-t".into(),
        options.secs.to_string(),
        "-P".into(),
        options.streams.max(1).to_string(),
        "-J".into(),
        "--connect-timeout".into(),
        "3000".into(),
    ];
    if options.reverse {
        args.push("-R".into());
    }
    let out = ns.output(&args)?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!("iperf3 printed no JSON ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim())
    })?;
    if let Some(err) = json.get("error") {
        bail!("iperf3 to {server} failed: {err}");
    }
    if !out.status.success() {
        bail!("iperf3 to {server} failed ({})", out.status);
    }
    let end = &json["end"];
    let bits_per_second = end["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 JSON lacks end.sum_received.bits_per_second"))?;
    let bytes_received = end["sum_received"]["bytes"]
        .as_u64()
        .ok_or_else(|| anyhow!("iperf3 JSON lacks end.sum_received.bytes"))?;
    Ok(Throughput { bits_per_second, bytes_received, retransmits: end["sum_sent"]["retransmits"].as_u64() })
}

/// Round-trip times of one `ping` run, in microseconds.
#[derive(Clone, Debug)]
pub struct PingRtt {
    pub transmitted: u32,
    pub received: u32,
    pub median_us: f64,
    pub mean_us: f64,
}

/// `ping -c count -i interval` from `ns`, every reply's time kept: the
/// median comes from them, not from ping's summary (which has no median).
/// Intervals below 2 ms need root.
pub fn ping_rtt(ns: &Netns, dst: impl Into<IpAddr>, count: u32, interval: Duration) -> Result<PingRtt> {
    let dst = dst.into();
    let out = ns.output(&[
        "ping",
        "-n",
        "-c",
        &count.to_string(),
        "-i",
        &interval.as_secs_f64().to_string(),
        "-W",
        "1",
        &dst.to_string(),
    ])?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut times_us: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ms| ms * 1e3)
        .collect();
    if times_us.is_empty() {
        bail!("ping {dst} from {} got no reply: {}", ns.name(), String::from_utf8_lossy(&out.stderr).trim());
    }
    times_us.sort_by(f64::total_cmp);
    let received = times_us.len() as u32;
    Ok(PingRtt {
        transmitted: count,
        received,
        median_us: times_us[times_us.len() / 2],
        mean_us: times_us.iter().sum::<f64>() / times_us.len() as f64,
    })
}

/// Formats a rate in Mbit/s, for messages.
pub fn mbit(bits_per_second: f64) -> String {
    format!("{:.0} Mbit/s", bits_per_second / 1e6)
}
