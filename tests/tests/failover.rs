//! Two gateway replicas behind the tunnel Service, and one of them dies.
//!
//! The Service is spread over both pods the way kube-proxy's iptables mode
//! does (each new tunnel flow picks one at random; a worker's tunnel is one
//! UDP flow, so each worker pod sticks to one replica). The test plays the
//! kubelet and kube-proxy: it probes each replica's `/readyz` every
//! `PROBE_PERIOD` and, after `FAILURE_THRESHOLD` failures in a row, takes
//! the replica out of the Service and deletes the tunnel flows that were
//! DNATed to it (kube-proxy clears UDP conntrack of removed endpoints).
//! What it measures is ours: that new connections from every client work
//! again as soon as the endpoint is gone, and what happens to connections
//! that were on the dead replica (they are reset at their next packet, not
//! left hanging; the survivor's carry on).
mod common;

use std::{
    collections::BTreeSet,
    net::{SocketAddrV4, TcpStream},
    sync::Mutex,
    time::{Duration, Instant},
};

use common::*;
use egress_tests::{agent::Agent, clients, topology::Pod, EgressSetup};

const PROBE_PERIOD: Duration = Duration::from_secs(1);
const FAILURE_THRESHOLD: u32 = 2;
/// Worker pods, added until both replicas carry some (w1 and w3 first).
const MAX_CLIENTS: usize = 16;
/// How long clients keep connecting after the endpoint is gone.
const AFTER_REMOVAL: Duration = Duration::from_secs(3);

fn ready(pod: &Pod) -> bool {
    let out = pod.ns.output(&["curl", "-sf", "--max-time", "1", "http://127.0.0.1:9090/readyz"]).unwrap();
    out.status.success()
}

/// A second gateway pod on the first one's node, same flags, same clients.
fn second_replica(s: &mut EgressSetup) -> (Pod, Agent) {
    let pod = s.add_gateway_pod("gw2", 20).unwrap();
    let agent = Agent::start_gateway(&pod.ns, &s.agent_binary, &s.agent_args)
        .unwrap_or_else(|e| panic!("starting the second replica: {e:#}"));
    (pod, agent)
}

/// Adds listed, joined worker pods (alternating nodes) until both
/// replicas carry at least one; returns every client and its replica.
fn clients_on_both(
    s: &mut EgressSetup,
    replicas: [std::net::Ipv4Addr; 2],
) -> Vec<(String, std::net::Ipv4Addr)> {
    let mut clients = Vec::new();
    for name in ["w1", "w3"] {
        clients.push((name.to_string(), s.curl_from(name, OK_TIMEOUT).unwrap().ip));
    }
    while replicas.iter().any(|r| clients.iter().all(|(_, on)| on != r)) {
        assert!(clients.len() < MAX_CLIENTS, "every client went to one replica: {clients:?}");
        let name = format!("c{}", clients.len());
        s.cluster.add_pod(clients.len() % 2, &name).unwrap();
        let mut listed: Vec<&str> = clients.iter().map(|(n, _)| n.as_str()).collect();
        listed.push(&name);
        s.set_listed(&listed).unwrap();
        s.join(&name).unwrap();
        let mut seen = None;
        eventually("the new client egresses", OK_TIMEOUT, || {
            seen = s.curl_from(&name, Duration::from_secs(1)).ok().map(|r| r.ip);
            seen.is_some()
        });
        clients.push((name, seen.unwrap()));
    }
    clients
}

/// Idle connections to the echo server, opened before the failure.
fn open_connections(
    s: &EgressSetup,
    clients: &[(String, std::net::Ipv4Addr)],
    per_client: usize,
) -> Vec<(String, TcpStream)> {
    let to = SocketAddrV4::new(s.server_ip(), clients::ECHO_HTTP_PORT);
    let mut out = Vec::new();
    for (name, _) in clients {
        for _ in 0..per_client {
            let stream = clients::tcp_connect(&s.pod(name).ns, to, Duration::from_secs(3)).unwrap();
            out.push((name.to_string(), stream));
        }
    }
    out
}

/// The client ports of the TCP flows a replica holds.
fn tcp_client_ports(agent: &Agent) -> BTreeSet<u16> {
    let status = agent.status().unwrap();
    status.flows.iter().filter(|f| f.protocol == "tcp").map(|f| f.client_port).collect()
}

#[test]
fn when_a_replica_dies_new_connections_from_every_client_work_again() {
    let mut s = start(options());
    let (gw2, survivor) = second_replica(&mut s);
    let gw1 = s.cluster.gateway().clone();
    let service = s.cluster.config().service.clone();
    s.cluster.set_service_backends(&service, &[gw1.ip, gw2.ip], &[]).unwrap();

    // Each client sticks to one replica; both replicas carry some.
    let clients = clients_on_both(&mut s, [gw1.ip, gw2.ip]);
    eprintln!("clients and their replica: {clients:?}");
    for (name, on) in &clients {
        let seen: BTreeSet<_> = (0..5).map(|_| s.curl_from(name, OK_TIMEOUT).unwrap().ip).collect();
        assert_eq!(seen, BTreeSet::from([*on]), "{name} moved between replicas");
    }
    let connections = open_connections(&s, &clients, 4);
    let on_victim = tcp_client_ports(&s.agent);
    let on_survivor = tcp_client_ports(&survivor);
    let port = |c: &TcpStream| c.local_addr().unwrap().port();
    assert!(connections.iter().any(|(_, c)| on_victim.contains(&port(c))), "no open connection on gw");
    assert!(connections.iter().any(|(_, c)| on_survivor.contains(&port(c))), "no open connection on gw2");

    // gw dies: its agent is killed, its program goes with it (no state
    // keeper), and its pod stays, black-holing what the Service sends it.
    s.agent.kill_hard().unwrap();
    let killed = Instant::now();

    let removed = Mutex::new(None::<Instant>);
    let attempts = std::thread::scope(|scope| {
        let controller = scope.spawn(|| {
            let mut failures = 0;
            loop {
                std::thread::sleep(PROBE_PERIOD);
                assert!(ready(&gw2), "the surviving replica stopped being ready");
                failures = if ready(&gw1) { 0 } else { failures + 1 };
                if failures >= FAILURE_THRESHOLD {
                    s.cluster.set_service_backends(&service, &[gw2.ip], &[gw1.ip]).unwrap();
                    *removed.lock().unwrap() = Some(Instant::now());
                    return;
                }
            }
        });
        let workers: Vec<_> = clients
            .iter()
            .map(|(name, _)| {
                let (s, removed) = (&s, &removed);
                scope.spawn(move || {
                    // (started, succeeded) for each new connection.
                    let mut attempts = Vec::new();
                    loop {
                        let started = Instant::now();
                        let ok = s.curl_from(name, Duration::from_secs(1)).is_ok_and(|r| r.ip == gw2.ip);
                        attempts.push((started, ok));
                        if removed.lock().unwrap().is_some_and(|at| at.elapsed() > AFTER_REMOVAL) {
                            return (name.clone(), attempts);
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    }
                })
            })
            .collect();
        controller.join().expect("controller");
        workers.into_iter().map(|c| c.join().expect("client")).collect::<Vec<_>>()
    });
    let removed = removed.into_inner().unwrap().expect("the endpoint was removed");
    let detection = removed - killed;
    eprintln!("endpoint removed {detection:?} after the kill (probe every {PROBE_PERIOD:?}, {FAILURE_THRESHOLD} failures)");

    for (name, attempts) in &attempts {
        let failed = attempts.iter().filter(|(_, ok)| !ok).count();
        let last_failure = attempts.iter().rposition(|(_, ok)| !ok);
        match last_failure.and_then(|i| attempts.get(i + 1)) {
            Some((back, _)) => eprintln!(
                "{name}: {} new connections, {failed} failed; working again {:?} after the kill, {:?} after the endpoint removal",
                attempts.len(),
                *back - killed,
                back.saturating_duration_since(removed)
            ),
            None => eprintln!("{name}: {} new connections, {failed} failed", attempts.len()),
        }
        let after_removal: Vec<_> = attempts.iter().filter(|(at, _)| *at > removed).collect();
        assert!(after_removal.len() >= 10, "{name}: only {} attempts after the removal", after_removal.len());
        assert!(
            after_removal.iter().all(|(_, ok)| *ok),
            "{name}: a new connection failed after the dead replica left the Service"
        );
    }

    // Connections held by the dead replica are reset at their next packet
    // (the survivor picks them up mid-stream, the server answers the
    // unknown source with RST); the survivor's own carry on.
    let (mut reset, mut kept) = (0, 0);
    for (name, stream) in connections {
        let p = port(&stream);
        let asked = Instant::now();
        let result = clients::http_echo_on(stream);
        if on_survivor.contains(&p) {
            let reply = result.unwrap_or_else(|e| panic!("{name}:{p} on the survivor broke: {e:#}"));
            assert_eq!(reply.ip, gw2.ip, "{name}:{p} moved");
            kept += 1;
        } else if on_victim.contains(&p) {
            let err = result.expect_err("a connection of the dead replica still works");
            assert!(asked.elapsed() < Duration::from_secs(2), "{name}:{p} hung until its timeout: {err:#}");
            reset += 1;
        }
    }
    eprintln!("{reset} connections of the dead replica failed at once at their next request; {kept} of the survivor's went on");
    assert!(reset > 0 && kept > 0);
}
