//! Hitless agent restart with the state keeper (`egress-agent keep`): the
//! agent is killed with SIGKILL in the middle of a TCP stream and a steady
//! UDP exchange; the keeper's links keep the program forwarding, and the
//! next agent takes the links and maps over (its own program swapped in, as
//! a newer build's would be), so both flows go on with their NAT bindings.
//! And `egress-agent detach` takes the datapath off for a rollback.
mod common;

use std::{
    collections::BTreeSet,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use common::*;
use egress_tests::{agent::Agent, clients, EgressSetup, GatewayOptions};

/// The standard setup with the state keeper, and a sweep (so a hand-over)
/// every second.
fn with_keeper() -> GatewayOptions {
    GatewayOptions { state_keeper: true, extra_args: vec!["--gc-interval-s".into(), "1".into()], ..options() }
}

fn start_agent_again(s: &EgressSetup) -> Agent {
    Agent::start_gateway(&s.cluster.gateway().ns, &s.agent_binary, &s.agent_args)
        .unwrap_or_else(|e| panic!("restarting the agent: {e:#}"))
}

#[test]
fn kill_9_during_a_stream_and_a_udp_exchange_loses_no_flow() {
    let mut s = start(with_keeper());
    let server = s.server_ip();
    let _iperf = clients::start_iperf3_server(s.cluster.outside(), server).unwrap();
    let drops_before = drop_total(&s);

    let stop = AtomicBool::new(false);
    let mut restarted = None;
    let (stream, udp) = std::thread::scope(|scope| {
        let stream = scope.spawn(|| {
            let out = s
                .pod("w3")
                .ns
                .output(&["iperf3", "-c", &server.to_string(), "-t", "10", "-i", "0.5", "-J"])
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("iperf3 -J output")
        });
        // One UDP flow (one socket): a datagram every 20 ms, each echoed.
        let udp = scope.spawn(|| {
            let sock = clients::udp_socket(&s.pod("w1").ns).unwrap();
            let (mut sent, mut lost, mut nat_ports) = (0u32, 0u32, BTreeSet::new());
            while !stop.load(Ordering::Relaxed) {
                sent += 1;
                match clients::udp_echo_on(&sock, s.udp_server(), Duration::from_secs(1)) {
                    Ok(reply) => {
                        nat_ports.insert(reply.port);
                    }
                    Err(_) => lost += 1,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (sent, lost, nat_ports)
        });
        std::thread::sleep(Duration::from_secs(3));
        let killed = Instant::now();
        s.agent.kill_hard().unwrap();
        // The program forwards alone for a while, then a new agent comes.
        std::thread::sleep(Duration::from_secs(2));
        restarted = Some(start_agent_again(&s));
        eprintln!("agent back {:?} after the kill", killed.elapsed());
        let stream = stream.join().expect("stream thread");
        stop.store(true, Ordering::Relaxed);
        (stream, udp.join().expect("udp thread"))
    });

    s.agent = restarted.expect("restarted");
    let log = s.agent.log();
    let (before, after) =
        replaced_program_ids(&log).unwrap_or_else(|| panic!("the new agent reattached:\n{log}"));
    assert_ne!(before, after, "the running link kept the old program");
    assert!(log.contains("flows_carried_over=true"), "the new agent started from empty maps:\n{log}");

    let intervals = clients::interval_bytes(&stream);
    eprintln!("TCP bytes per 0.5 s: {intervals:?}");
    assert!(
        stream.get("error").is_none(),
        "iperf3 failed: {} (bytes per 0.5 s: {intervals:?})",
        stream["error"]
    );
    assert!(intervals.len() >= 19, "iperf3 reported {} intervals, not 20", intervals.len());
    assert!(
        intervals.iter().all(|b| *b > 0),
        "the stream stalled for a whole interval around the restart: {intervals:?}"
    );

    let (sent, lost, nat_ports) = udp;
    eprintln!("UDP: {sent} sent, {lost} unanswered, NAT ports seen {nat_ports:?}");
    assert!(sent > 300, "only {sent} datagrams sent");
    assert_eq!(lost, 0, "datagrams lost across the restart");
    assert_eq!(nat_ports.len(), 1, "the UDP flow was rebound (its binding was lost): {nat_ports:?}");
    assert_eq!(drop_total(&s), drops_before, "packets dropped across the restart");
}

#[test]
fn detach_takes_the_datapath_off_and_a_new_agent_starts_empty() {
    let mut s = start(with_keeper());
    s.curl_from("w1", OK_TIMEOUT).expect("w1 egresses before the detach");
    let keeper = s.keeper.as_ref().expect("keeper").socket.display().to_string();
    let binary = s.agent_binary.display().to_string();
    let out = s.cluster.gateway().ns.output(&[&binary, "detach", "--keeper-socket", &keeper]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "detach failed: {text}");
    assert!(text.contains("let go of"), "{text}");

    // The running agent was told, let go and exited by itself, cleanly.
    eventually("the agent exits after the detach", OK_TIMEOUT, || s.agent.check_running().is_err());
    let status = s.agent.terminate().unwrap();
    assert!(status.success(), "agent exit status {status}:\n{}", s.agent.log());
    assert!(s.agent.log().contains("egress-agent detach: detaching"), "{}", s.agent.log());

    // Nothing forwards: the hook is empty, not frozen with old maps.
    assert!(s.curl_from("w1", DROP_TIMEOUT).is_err(), "w1 still egresses after the detach");
    let status = s.cluster.gateway().ns.output(&[&binary, "status", "--agent-addr", "127.0.0.1:1"]).unwrap();
    assert!(
        !status.status.success(),
        "a datapath is still attached: {}",
        String::from_utf8_lossy(&status.stdout)
    );

    // A new agent starts from empty maps and works.
    s.agent = start_agent_again(&s);
    assert!(s.agent.log().contains("flows_carried_over=false"), "{}", s.agent.log());
    s.curl_from("w1", OK_TIMEOUT).expect("w1 egresses with the new agent");
}

/// The program ids in "took over the running egress_gateway link on eth0:
/// program id A replaced by this build's, id B".
fn replaced_program_ids(log: &str) -> Option<(u32, u32)> {
    let line = log.lines().find(|l| l.contains("took over the running egress_gateway link"))?;
    let after_id = |marker: &str| -> Option<u32> {
        let rest = &line[line.find(marker)? + marker.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    Some((after_id("program id ")?, after_id("build's, id ")?))
}

#[test]
fn a_second_agent_supersedes_the_first_which_exits_without_detaching() {
    let mut s = start(with_keeper());
    let mut args = s.agent_args.clone();
    for (flag, addr) in [("--metrics-addr", "127.0.0.1:9190"), ("--status-addr", "127.0.0.1:9191")] {
        args.extra.extend([flag.into(), addr.into()]);
    }
    let second = Agent::start_gateway(&s.cluster.gateway().ns, &s.agent_binary, &args)
        .unwrap_or_else(|e| panic!("starting a second agent: {e:#}"));
    assert!(second.log().contains("took over the running egress_gateway link"), "{}", second.log());
    // The first learns at its next hand-over (every second here).
    eventually("the first agent exits", OK_TIMEOUT, || s.agent.check_running().is_err());
    let status = s.agent.terminate().unwrap();
    assert!(!status.success(), "superseded is an error exit");
    assert!(s.agent.log().contains("another agent took this gateway's datapath over"), "{}", s.agent.log());
    assert!(!s.agent.log().contains("egress-agent detach: detaching"), "{}", s.agent.log());
    s.agent = second;
    s.curl_from("w1", OK_TIMEOUT).expect("w1 egresses through the second agent");
    s.curl_from("w3", OK_TIMEOUT).expect("w3 egresses through the second agent");
}

#[test]
fn a_restarted_keeper_gets_the_datapath_back_for_the_next_agent() {
    let mut s = start(with_keeper());
    let mut keeper = s.keeper.take().expect("keeper");
    let asked = Instant::now();
    let status = keeper.daemon.stop().unwrap();
    assert!(status.success(), "the keeper's exit on SIGTERM: {status}");
    assert!(asked.elapsed() < Duration::from_secs(2), "the keeper took {:?} to stop", asked.elapsed());
    // The agent holds its own links: nothing changes for the clients.
    s.curl_from("w1", OK_TIMEOUT).expect("w1 egresses without the keeper");
    eventually("the agent notices", OK_TIMEOUT, || s.agent.log().contains("the state keeper went away"));

    // The sidecar comes back: the agent hands the datapath over again at
    // its next sweep (one second here), and a killed agent's successor
    // takes it from the new keeper.
    keeper.restart(&s.cluster.gateway().ns, &s.agent_binary).unwrap();
    eventually("the new keeper holds the datapath", OK_TIMEOUT, || {
        keeper.daemon.log().contains("holding the datapath")
    });
    s.agent.check_running().unwrap();
    s.keeper = Some(keeper);
    s.agent.kill_hard().unwrap();
    s.agent = start_agent_again(&s);
    assert!(replaced_program_ids(&s.agent.log()).is_some(), "{}", s.agent.log());
    s.curl_from("w1", OK_TIMEOUT).expect("w1 egresses after the restarts");
}

#[test]
fn an_address_that_changed_pods_while_no_agent_ran_loses_its_flows() {
    let mut s = start(with_keeper());
    let (w1, w3) = (s.pod("w1").ip, s.pod("w3").ip);
    clients::udp_echo(&s.pod("w1").ns, s.udp_server(), OK_TIMEOUT).unwrap();
    clients::udp_echo(&s.pod("w3").ns, s.udp_server(), OK_TIMEOUT).unwrap();
    s.agent.kill_hard().unwrap();
    // While no agent runs, w1's address goes to another pod; w3 stays.
    s.pods_file.write(&[(w1, "another-pod"), (w3, "w3")]).unwrap();
    s.agent = start_agent_again(&s);
    let log = s.agent.log();
    let removed = log.lines().find(|l| l.contains("client removed") && l.contains(&format!("client={w1}")));
    assert!(removed.is_some_and(|l| l.contains("flows=1")), "w1's flow was not forgotten:\n{log}");
    assert!(
        !log.lines().any(|l| l.contains("client removed") && l.contains(&format!("client={w3}"))),
        "{log}"
    );
    let status = s.status().unwrap();
    assert_eq!(status.flows_of(w1, "udp").count(), 0, "the old pod's flow survived");
    assert_eq!(status.flows_of(w3, "udp").count(), 1, "w3's flow was lost");
}

#[test]
fn a_restart_with_another_nat_range_starts_fresh_and_says_so() {
    let mut s = start(with_keeper());
    clients::udp_echo(&s.pod("w1").ns, s.udp_server(), OK_TIMEOUT).unwrap();
    assert_eq!(s.status().unwrap().flows.len(), 1);
    s.agent.kill_hard().unwrap();
    // The old flow's NAT port lies outside the new range: its replies would
    // never be recognised. The new agent must not carry it over.
    s.agent_args.nat_ports = Some((20_000, 30_000));
    s.agent = start_agent_again(&s);
    let log = s.agent.log();
    assert!(log.contains("--nat-ports changed from 10240-64511 to 20000-30000"), "{log}");
    assert!(log.contains("starting with empty maps"), "{log}");
    assert!(log.contains("flows_carried_over=false"), "{log}");
    assert!(s.status().unwrap().flows.is_empty(), "a flow was carried over");
    let reply = clients::udp_echo(&s.pod("w1").ns, s.udp_server(), OK_TIMEOUT).unwrap();
    assert!((20_000..=30_000).contains(&reply.port), "NAT port {} outside the new range", reply.port);
}

#[test]
fn a_gateway_refuses_another_gateways_datapath_from_a_shared_keeper() {
    let mut s = start(with_keeper());
    let other = s.add_gateway_pod("gw2", 20).unwrap();
    // Same flags, same keeper socket, another pod.
    let err = Agent::start_gateway(&other.ns, &s.agent_binary, &s.agent_args)
        .expect_err("a second gateway took over the first one's datapath");
    let text = format!("{err:#}");
    assert!(text.contains("the state keeper holds another gateway's datapath"), "{text}");
    // The first gateway is untouched, also after its next hand-overs.
    std::thread::sleep(Duration::from_secs(2));
    s.agent.check_running().unwrap();
    s.curl_from("w1", OK_TIMEOUT).expect("w1 still egresses through the first gateway");
}

fn drop_total(s: &EgressSetup) -> u64 {
    let status = s.status().unwrap();
    status.counters.iter().filter(|(n, _)| n.starts_with("drop_")).map(|(_, v)| *v).sum()
}
