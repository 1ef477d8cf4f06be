//! Three gateway replicas and twenty workers whose `join --follow
//! --replicas NAME` sidecars steer their own tunnels: each finds the ready
//! replicas through a headless Service's DNS name (dnsmasq here, playing
//! the cluster DNS), takes its rendezvous choice, probes it through the
//! tunnel ten times a second and moves when it stops answering.
//!
//! Measured, for a replica killed with SIGKILL and for a replica whose
//! network goes away: the time from the failure to each affected worker's
//! first successful new connection (the goal: under a second for every
//! worker). Also shown: the other workers are not disturbed, connections
//! that were on the dead replica fail at once instead of hanging, and a
//! hostile pod that forges probe answers into a victim's tunnel cannot
//! keep it on the dead replica.
//!
//! No Linux-reference twin: Linux's gateway has no probe to answer, so its
//! failover is the Service's alone (tests/tests/failover.rs measures that).
mod common;

use std::{
    collections::BTreeMap,
    io::Read,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::*;
use egress_common::config::{DEFAULT_VNI, DEFAULT_VXLAN_PORT, TUNNEL_GATEWAY_IP, TUNNEL_GATEWAY_MAC};
use egress_tests::{
    agent::Agent, clients, netns, topology::Pod, util::TempDir, Daemon, EgressSetup, GatewayOptions,
};

const WORKERS: usize = 20;
/// The headless Service's name, as the workers' resolver asks for it.
const REPLICAS_NAME: &str = "egress-gateway-replicas.egress-system.svc.cluster.local";
/// The goal: every affected worker connects again within this.
const FAILOVER_GOAL: Duration = Duration::from_secs(1);
/// The rollout test's grace period (terminationGracePeriodSeconds).
const GRACE: Duration = Duration::from_secs(15);
/// How long the clients keep connecting after the failure.
const AFTER_FAILURE: Duration = Duration::from_secs(3);
/// A client's new connection: connect and answer within this, or failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(300);
const ATTEMPT_PAUSE: Duration = Duration::from_millis(50);

/// The cluster DNS for the workers: dnsmasq in its own pod answering the
/// replicas' name from a hosts file, and each worker namespace's
/// resolv.conf pointing at it (`ip netns exec` mounts
/// /etc/netns/NAME/resolv.conf over /etc/resolv.conf; deleting the
/// namespace removes it).
struct ClusterDns {
    dnsmasq: Daemon,
    hosts: TempDir,
}

impl ClusterDns {
    /// The headless Service's answer changes to `replicas` (the hosts
    /// file rewritten, dnsmasq told to read it again).
    fn answer(&self, replicas: &[Ipv4Addr]) {
        write_hosts(&self.hosts.path().join("hosts"), replicas);
        // SAFETY: kill(2) of our own child, not reaped yet.
        assert_eq!(unsafe { libc::kill(self.dnsmasq.pid().unwrap() as i32, libc::SIGHUP) }, 0);
    }
}

fn write_hosts(path: &std::path::Path, replicas: &[Ipv4Addr]) {
    let lines: String = replicas.iter().map(|ip| format!("{ip} {REPLICAS_NAME}\n")).collect();
    std::fs::write(path, lines).unwrap();
}

fn cluster_dns(s: &mut EgressSetup, replicas: &[Ipv4Addr], workers: &[String]) -> ClusterDns {
    let pod = s.cluster.add_pod(0, "dns").unwrap();
    let hosts = TempDir::new("replicas-dns").unwrap();
    let hosts_file = hosts.path().join("hosts");
    write_hosts(&hosts_file, replicas);
    let args = [
        "dnsmasq".to_string(),
        "--conf-file=/dev/null".into(),
        "--no-daemon".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        format!("--addn-hosts={}", hosts_file.display()),
        "--port=53".into(),
        format!("--listen-address={}", pod.ip),
        "--bind-interfaces".into(),
        "--pid-file=".into(),
        "--user=root".into(),
    ];
    let dnsmasq = Daemon::spawn(&pod.ns, "dnsmasq", &args).unwrap();
    for name in workers {
        let dir = netns::etc_dir(s.pod(name).ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), format!("nameserver {}\n", pod.ip)).unwrap();
    }
    let dns = ClusterDns { dnsmasq, hosts };
    eventually("the workers resolve the replicas' name", OK_TIMEOUT, || {
        let out = s.pod(&workers[0]).ns.output(&["getent", "ahostsv4", REPLICAS_NAME]).unwrap();
        replicas.iter().all(|r| String::from_utf8_lossy(&out.stdout).contains(&r.to_string()))
    });
    dns
}

/// Three replicas (the setup's own and two more on its node), all behind
/// the tunnel Service, and twenty listed workers joined through it.
struct Replicas {
    s: EgressSetup,
    pods: Vec<Pod>,
    /// The other replicas' agents (the first's is `s.agent`).
    agents: Vec<Agent>,
    workers: Vec<String>,
}

fn three_replicas_and_twenty_workers() -> Replicas {
    let mut s = start(GatewayOptions { listed: vec![], joined: vec![], ..options() });
    let mut pods = vec![s.cluster.gateway().clone()];
    let mut agents = Vec::new();
    for (name, host) in [("gw2", 20), ("gw3", 22)] {
        let pod = s.add_gateway_pod(name, host).unwrap();
        agents.push(Agent::start_gateway(&pod.ns, &s.agent_binary, &s.agent_args).unwrap());
        pods.push(pod);
    }
    let service = s.cluster.config().service.clone();
    let ips: Vec<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
    s.cluster.set_service_backends(&service, &ips, &[]).unwrap();

    let mut workers: Vec<String> = ["w1", "w2", "w3"].map(String::from).to_vec();
    for i in workers.len()..WORKERS {
        let name = format!("c{i}");
        s.cluster.add_pod(i % 2, &name).unwrap();
        workers.push(name);
    }
    let listed: Vec<&str> = workers.iter().map(String::as_str).collect();
    s.set_listed(&listed).unwrap();
    for name in &workers {
        s.join(name).unwrap();
    }
    Replicas { s, pods, agents, workers }
}

/// Starts pod `name`'s sidecar: `join --follow --replicas NAME`.
fn steering_sidecar(s: &EgressSetup, name: &str) -> Daemon {
    let join = s.join_args();
    let mut args =
        vec![s.agent_binary.display().to_string(), "join".into(), "--gateway".into(), join.gateway];
    for cidr in join.cluster_cidrs {
        args.extend(["--cluster-cidr".into(), cidr]);
    }
    args.extend(["--follow".into(), "--replicas".into(), REPLICAS_NAME.into()]);
    Daemon::spawn(&s.pod(name).ns, &format!("steer-{name}"), &args).unwrap()
}

impl Replicas {
    fn ips(&self) -> Vec<Ipv4Addr> {
        self.pods.iter().map(|p| p.ip).collect()
    }

    /// The agent of the replica at `ip`.
    fn agent_of(&self, ip: Ipv4Addr) -> &Agent {
        match self.pods.iter().position(|p| p.ip == ip).expect("a replica's address") {
            0 => &self.s.agent,
            i => &self.agents[i - 1],
        }
    }
}

/// The replicas with the cluster DNS answering their name, every worker's
/// steering sidecar running, and the replica each worker settled on.
struct Steered {
    // Field order is drop order: the sidecars before their namespaces.
    sidecars: Vec<Daemon>,
    dns: ClusterDns,
    on: BTreeMap<String, Ipv4Addr>,
    r: Replicas,
}

fn steered() -> Steered {
    let mut r = three_replicas_and_twenty_workers();
    let (ips, workers) = (r.ips(), r.workers.clone());
    let dns = cluster_dns(&mut r.s, &ips, &workers);
    let sidecars = workers.iter().map(|n| steering_sidecar(&r.s, n)).collect();
    let on = settled(&r);
    Steered { sidecars, dns, on, r }
}

/// The remote of pod `name`'s tunnel device.
fn tunnel_remote(s: &EgressSetup, name: &str) -> Option<Ipv4Addr> {
    let out = s.pod(name).ns.output(&["ip", "-j", "-d", "link", "show", "dev", "egress0"]).ok()?;
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    links[0]["linkinfo"]["info_data"]["remote"].as_str()?.parse().ok()
}

/// Waits until every worker's tunnel points at a replica (not the Service)
/// and its traffic leaves with that replica's address; returns each
/// worker's replica.
fn settled(r: &Replicas) -> BTreeMap<String, Ipv4Addr> {
    let replicas: Vec<Ipv4Addr> = r.pods.iter().map(|p| p.ip).collect();
    let mut on = BTreeMap::new();
    for name in &r.workers {
        eventually(&format!("{name} steers to a replica"), OK_TIMEOUT, || {
            let remote = tunnel_remote(&r.s, name).filter(|ip| replicas.contains(ip));
            let seen = r.s.curl_from(name, Duration::from_secs(1)).ok().map(|reply| reply.ip);
            if let Some(ip) = remote.filter(|ip| seen == Some(*ip)) {
                on.insert(name.clone(), ip);
            }
            on.contains_key(name)
        });
    }
    on
}

/// One new connection of a client: when it started and ended, and the
/// address the server saw (None: it failed).
struct Attempt {
    started: Instant,
    ended: Instant,
    via: Option<Ipv4Addr>,
}

/// Every worker opens new connections to the echo server back to back
/// while `failure` runs, until `AFTER_FAILURE` after it; returns each
/// worker's attempts and when the failure happened.
fn connect_through_failure(
    r: &Replicas,
    failure: impl FnOnce() + Send,
) -> (BTreeMap<String, Vec<Attempt>>, Instant) {
    let to = SocketAddrV4::new(r.s.server_ip(), clients::ECHO_HTTP_PORT);
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let clients: Vec<_> = r
            .workers
            .iter()
            .map(|name| {
                let (ns, stop) = (&r.s.pod(name).ns, &stop);
                scope.spawn(move || {
                    let mut attempts = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let via = clients::tcp_connect(ns, to, ATTEMPT_TIMEOUT)
                            .and_then(clients::http_echo_on)
                            .ok()
                            .map(|reply| reply.ip);
                        attempts.push(Attempt { started, ended: Instant::now(), via });
                        std::thread::sleep(ATTEMPT_PAUSE);
                    }
                    (name.clone(), attempts)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(1));
        failure();
        let failed_at = Instant::now();
        std::thread::sleep(AFTER_FAILURE);
        stop.store(true, Ordering::Relaxed);
        (clients.into_iter().map(|c| c.join().unwrap()).collect(), failed_at)
    })
}

/// The replica carrying the most workers.
fn busiest(on: &BTreeMap<String, Ipv4Addr>) -> Ipv4Addr {
    let mut count = BTreeMap::new();
    for ip in on.values() {
        *count.entry(*ip).or_insert(0) += 1;
    }
    *count.iter().max_by_key(|(_, n)| **n).unwrap().0
}

/// Checks the clients' record of a failure of `victim` and prints the
/// figures: every worker on it connects again through another replica
/// within `FAILOVER_GOAL`; every other worker never fails.
fn assert_failover(
    what: &str,
    on: &BTreeMap<String, Ipv4Addr>,
    victim: Ipv4Addr,
    attempts: &BTreeMap<String, Vec<Attempt>>,
    failed_at: Instant,
) {
    let mut worst = Duration::ZERO;
    for (name, attempts) in attempts {
        let after: Vec<&Attempt> = attempts.iter().filter(|a| a.started >= failed_at).collect();
        assert!(after.len() >= 5, "{name}: only {} connections after the failure", after.len());
        let failed = attempts.iter().filter(|a| a.via.is_none()).count();
        if on[name] != victim {
            assert_eq!(failed, 0, "{name} was on {} and lost connections when {victim} failed", on[name]);
            continue;
        }
        // The failure is complete when it returns (a killed agent is
        // dead, its links closed): nothing may pass the victim after it.
        if let Some(late) = after.iter().find(|a| a.via == Some(victim)) {
            panic!(
                "{name} still leaves through the dead replica {:?} after it failed",
                late.started - failed_at
            );
        }
        let back = after
            .iter()
            .find(|a| a.via.is_some_and(|via| via != victim))
            .unwrap_or_else(|| panic!("{name}: no successful connection after {victim} failed"));
        let took = back.ended - failed_at;
        eprintln!(
            "{what}: {name} connected again through {} {took:?} after, {failed} connections failed",
            back.via.unwrap()
        );
        assert!(
            after.iter().skip_while(|a| a.via.is_none_or(|via| via == victim)).all(|a| a.via.is_some()),
            "{name} failed again after moving"
        );
        worst = worst.max(took);
    }
    eprintln!("{what}: the slowest affected worker connected again {worst:?} after the failure");
    assert!(
        worst < FAILOVER_GOAL,
        "{what}: a worker took {worst:?} to connect again (goal {FAILOVER_GOAL:?})"
    );
}

#[test]
fn a_killed_replica_s_workers_connect_again_within_a_second() {
    let Steered { on, r, .. } = &steered();
    for ip in &r.ips() {
        let n = on.values().filter(|v| *v == ip).count();
        eprintln!("replica {ip}: {n} workers");
        assert!(n >= 3, "replica {ip} carries {n} of {WORKERS} workers: the spread is uneven");
    }

    let victim = busiest(on);
    let victim_agent = r.agent_of(victim);
    // An idle connection per affected worker, opened before the kill.
    let to = SocketAddrV4::new(r.s.server_ip(), clients::ECHO_HTTP_PORT);
    let idle: Vec<_> = on
        .iter()
        .filter(|(_, ip)| **ip == victim)
        .map(|(name, _)| {
            (name.clone(), clients::tcp_connect(&r.s.pod(name).ns, to, Duration::from_secs(2)).unwrap())
        })
        .collect();

    let (attempts, killed) = connect_through_failure(r, || victim_agent.kill_hard().unwrap());
    assert_failover("kill -9", on, victim, &attempts, killed);

    // The idle connections were on the dead replica: the sidecar aborted
    // them when it moved, so a read fails at once instead of hanging.
    for (name, mut stream) in idle {
        stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let err = stream.read(&mut [0u8; 1]).expect_err("a connection on the dead replica still reads");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionAborted, "{name}: {err}");
    }
}

#[test]
fn a_replica_whose_network_goes_away_loses_its_workers_within_a_second() {
    let Steered { on, r, .. } = &steered();
    let victim = busiest(on);
    let victim_pod = r.pods.iter().find(|p| p.ip == victim).unwrap().clone();
    let (attempts, cut) =
        connect_through_failure(r, || drop(victim_pod.ns.ip(&["link", "set", "eth0", "down"]).unwrap()));
    assert_failover("network gone", on, victim, &attempts, cut);
}

/// One step of `kubectl rollout restart` (maxSurge 1): a new replica comes
/// up and joins the headless Service's answer, an old one runs its preStop
/// hook, `egress-agent drain`, then its agent is stopped.
/// Meanwhile every worker keeps opening short connections and one of the
/// old replica's workers runs a 4 s upload. Not one short connection may
/// fail, the upload must finish, and the drain must end once the upload
/// has (long before any grace period).
#[test]
fn a_rollout_cuts_no_connection_that_ends_within_the_grace() {
    let Steered { dns, on, mut r, sidecars: _sidecars } = steered();
    let mut ips = r.ips();
    let old = busiest(&on);
    let old_pod = r.pods.iter().find(|p| p.ip == old).unwrap().clone();
    let streamer = on.iter().find(|(_, ip)| **ip == old).unwrap().0.clone();
    let _iperf3 = clients::start_iperf3_server(r.s.cluster.outside(), r.s.server_ip()).unwrap();

    // The surge: a new replica, ready, in the answer. The old one stays
    // in it, as when the cluster DNS is slow to drop a terminating pod: the
    // mark in its probe answers alone must move its workers.
    let new = r.s.add_gateway_pod("gw4", 24).unwrap();
    r.agents.push(Agent::start_gateway(&new.ns, &r.s.agent_binary, &r.s.agent_args).unwrap());
    ips.push(new.ip);
    dns.answer(&ips);

    let server = r.s.server_ip().to_string();
    let old_agent = r.agent_of(old);
    let (attempts, stopped, upload, drained_after) = std::thread::scope(|scope| {
        let upload = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            let args = ["iperf3", "-c", server.as_str(), "-t", "4", "-b", "20M"];
            r.s.pod(&streamer).ns.output(&args).unwrap()
        });
        let mut drained_after = Duration::ZERO;
        let (attempts, stopped) = connect_through_failure(&r, || {
            let started = Instant::now();
            let binary = r.s.agent_binary.display().to_string();
            // The kubelet ends a preStop hook at the grace period.
            let grace = GRACE.as_secs().to_string();
            let drain =
                old_pod.ns.output(&["timeout", &grace, &binary, "drain", "--min-wait-s", "1"]).unwrap();
            drained_after = started.elapsed();
            if !drain.status.success() {
                // Which connections held it: the flows the old replica still has.
                let status =
                    old_agent.status_json().map(|s| s.to_string()).unwrap_or_else(|e| format!("{e:#}"));
                panic!(
                    "drain did not end by itself within the {GRACE:?} grace: {}; the old replica's status: {}",
                    String::from_utf8_lossy(&drain.stdout).trim().replace('\n', " / "),
                    &status[..status.len().min(4000)]
                );
            }
            eprintln!("drain: {}", String::from_utf8_lossy(&drain.stdout).trim().replace('\n', " / "));
            old_agent.kill_hard().unwrap();
        });
        (attempts, stopped, upload.join().unwrap(), drained_after)
    });
    assert!(
        upload.status.success(),
        "the upload on the draining replica broke: {}",
        String::from_utf8_lossy(&upload.stdout)
    );
    eprintln!("the old replica drained in {drained_after:?} (its upload lasted 4 s)");

    let mut failed = 0;
    for (name, attempts) in &attempts {
        let lost: Vec<_> = attempts.iter().filter(|a| a.via.is_none()).collect();
        failed += lost.len();
        let after: Vec<_> = attempts.iter().filter(|a| a.started > stopped).collect();
        assert!(
            after.iter().all(|a| a.via.is_some_and(|ip| ip != old)),
            "{name} still goes to the stopped replica"
        );
        if !lost.is_empty() {
            eprintln!("{name}: {} of {} short connections failed", lost.len(), attempts.len());
        }
    }
    let total: usize = attempts.values().map(Vec::len).sum();
    eprintln!("rollout step: {failed} of {total} short connections failed");
    assert_eq!(failed, 0, "short connections failed during the rollout");
    for name in on.iter().filter(|(_, ip)| **ip == old).map(|(n, _)| n) {
        assert_ne!(tunnel_remote(&r.s, name), Some(old), "{name} did not leave the drained replica");
    }
}

/// A hostile labeled pod knows the victim's address, its tunnel MAC (it is
/// derived from the address), the VNI and the probe's identifier, and
/// floods the victim's VXLAN port with echo replies "from" 169.254.42.1 to
/// keep it on a dead replica. They reach the victim's tunnel device; they
/// do not carry the victim's secret, so the victim moves all the same.
#[test]
fn forged_probe_answers_do_not_keep_a_worker_on_a_dead_replica() {
    let Steered { sidecars, on, mut r, dns: _dns } = steered();
    let victim = busiest(&on);
    let targets: Vec<(Pod, u16)> = on
        .iter()
        .filter(|(_, ip)| **ip == victim)
        .map(|(name, _)| {
            let sidecar = &sidecars[r.workers.iter().position(|w| w == name).unwrap()];
            (r.s.pod(name).clone(), sidecar.pid().unwrap() as u16)
        })
        .collect();
    let attacker = r.s.cluster.add_pod(0, "hostile").unwrap();
    let socket = socket_for_forging(&attacker);
    let forge = |socket: &UdpSocket| {
        for (pod, identifier) in &targets {
            let to = SocketAddrV4::new(pod.ip, DEFAULT_VXLAN_PORT);
            socket.send_to(&forged_answer(pod.ip, *identifier), to).unwrap();
        }
    };
    // They do come out of the victim's tunnel as echo replies, where the
    // sidecar's probe socket listens.
    let (first, identifier) = &targets[0];
    let seen = first
        .ns
        .run(|| {
            let socket = tunnel_icmp_socket();
            forge(&socket_for_forging(&attacker));
            Ok(echo_replies(&socket))
        })
        .unwrap();
    assert!(
        seen.contains(&(*identifier, FORGED_SEQUENCE)),
        "the forged answers do not come out of the victim's tunnel: {seen:?}"
    );

    let victim_agent = r.agent_of(victim);
    let flooding = AtomicBool::new(true);
    let (attempts, killed) = std::thread::scope(|scope| {
        scope.spawn(|| {
            while flooding.load(Ordering::Relaxed) {
                forge(&socket);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let result = connect_through_failure(&r, || victim_agent.kill_hard().unwrap());
        flooding.store(false, Ordering::Relaxed);
        result
    });
    assert_failover("kill -9 under forged answers", &on, victim, &attempts, killed);
}

/// Later than any probe of the test's sidecars, so one they would accept.
const FORGED_SEQUENCE: u16 = 10_000;

/// A VXLAN packet into `worker`'s tunnel holding an echo reply from the
/// tunnel's next hop with the probe's `identifier`, a sequence number the
/// sidecar accepts, and a payload of the right length that is not its
/// secret.
fn forged_answer(worker: Ipv4Addr, identifier: u16) -> Vec<u8> {
    let mut icmp = vec![0u8, 0, 0, 0];
    icmp.extend_from_slice(&identifier.to_be_bytes());
    icmp.extend_from_slice(&FORGED_SEQUENCE.to_be_bytes());
    icmp.extend_from_slice(&[0x5a; 16]);
    let sum = egress_common::checksum::internet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let ip = egress_tests::craft::ipv4_packet(Ipv4Addr::from(TUNNEL_GATEWAY_IP), worker, 1, 0, 0, &icmp);
    let [a, b, c, d] = worker.octets();
    let mut packet = vec![0x08, 0, 0, 0];
    packet.extend_from_slice(&(DEFAULT_VNI << 8).to_be_bytes());
    packet.extend_from_slice(&[0x06, 0x65, a, b, c, d]);
    packet.extend_from_slice(&TUNNEL_GATEWAY_MAC);
    packet.extend_from_slice(&[0x08, 0x00]);
    packet.extend_from_slice(&ip);
    packet
}

fn socket_for_forging(attacker: &Pod) -> UdpSocket {
    clients::udp_socket(&attacker.ns).unwrap()
}

/// A raw ICMP socket on the calling thread's namespace, bound to the
/// tunnel device like the sidecar's, reading for at most 200 ms a call.
fn tunnel_icmp_socket() -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: plain socket calls on a descriptor this function owns.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMP);
        assert!(fd >= 0, "raw ICMP socket: {}", std::io::Error::last_os_error());
        let socket = std::os::fd::OwnedFd::from_raw_fd(fd);
        let device = b"egress0";
        let rc = libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            device.as_ptr().cast(),
            device.len() as u32,
        );
        assert_eq!(rc, 0, "SO_BINDTODEVICE: {}", std::io::Error::last_os_error());
        let timeout = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
        let rc = libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        assert_eq!(rc, 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
        socket
    }
}

/// The (identifier, sequence) of the echo replies from 169.254.42.1 the
/// socket reads within a second (the sidecar's own answers included).
fn echo_replies(socket: &std::os::fd::OwnedFd) -> Vec<(u16, u16)> {
    use std::os::fd::AsRawFd;
    let mut found = Vec::new();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        // SAFETY: recv(2) into a buffer we own, of its own length.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 28 {
            continue;
        }
        let icmp = &buf[20..n as usize];
        if buf[12..16] == TUNNEL_GATEWAY_IP && icmp[0] == 0 {
            found.push((u16::from_be_bytes([icmp[4], icmp[5]]), u16::from_be_bytes([icmp[6], icmp[7]])));
        }
    }
    found
}
