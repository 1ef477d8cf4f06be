//! Two gateways with their own egress addresses (a team's, another team's),
//! each behind its own Service, and worker pods whose labels choose one.
//!
//! Each gateway's agent lists the pods its own selector matches (here its
//! pods file, rewritten as its watcher would be told). Each worker runs the
//! `join --follow` sidecar with the pod's labels file and
//! `--gateway-for egress=team-b <Service B>` beside the default gateway
//! (`egress=external`). Shown: each pod leaves with its own gateway's
//! address, an unlabeled pod leaves directly, a relabeled pod moves to its
//! new gateway, and a pod cannot use a gateway that does not list it.
mod common;

use std::{net::Ipv4Addr, path::Path, time::Duration};

use common::*;
use egress_tests::{
    agent::{self, Agent, GatewayArgs, JoinArgs},
    scenario::PodsFile,
    topology::{Pod, ServiceConfig},
    util::TempDir,
    Daemon, EgressSetup, GatewayOptions,
};

/// The second gateway's Service (the first's is 10.96.0.10).
const VIP_B: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);
const TEAM_B: (&str, &str) = ("egress", "team-b");
const DEFAULT: (&str, &str) = ("egress", "external");
/// The sidecar re-reads the labels every 5 s.
const MOVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Writes a Downward API `metadata.labels` file.
fn write_labels(path: &Path, labels: &[(&str, &str)]) {
    let text: String = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// The second gateway: its own pod (its own address), agent, pods file and
/// Service.
struct SecondGateway {
    pod: Pod,
    pods_file: PodsFile,
    agent: Agent,
}

fn second_gateway(s: &mut EgressSetup) -> SecondGateway {
    let pod = s.add_gateway_pod("gwb", 21).unwrap();
    let pods_file = PodsFile::create().unwrap();
    pods_file.write(&[]).unwrap();
    let args = GatewayArgs { pods_file: pods_file.path().to_path_buf(), ..s.agent_args.clone() };
    let agent = Agent::start_gateway(&pod.ns, &s.agent_binary, &args)
        .unwrap_or_else(|e| panic!("starting the second gateway: {e:#}"));
    let service =
        ServiceConfig { vip: VIP_B, backend_pod: pod.name.clone(), ..s.cluster.config().service.clone() };
    s.cluster.add_service(&service).unwrap();
    SecondGateway { pod, pods_file, agent }
}

/// Starts pod `name`'s `join --follow` sidecar on its labels file.
fn follow_labels(s: &EgressSetup, name: &str, labels: &Path) -> Daemon {
    let join = s.join_args();
    let mut args =
        vec![s.agent_binary.display().to_string(), "join".into(), "--gateway".into(), join.gateway];
    for cidr in join.cluster_cidrs {
        args.extend(["--cluster-cidr".into(), cidr]);
    }
    args.extend(["--gateway-for".into(), format!("{}={}", TEAM_B.0, TEAM_B.1), VIP_B.to_string()]);
    args.extend(["--labels-file".into(), labels.display().to_string(), "--follow".into()]);
    Daemon::spawn(&s.pod(name).ns, &format!("follow-{name}"), &args).unwrap()
}

/// The address the echo server sees pod `name` come from, once it answers.
fn seen_from(s: &EgressSetup, name: &str) -> Option<Ipv4Addr> {
    s.curl_from(name, Duration::from_secs(2)).ok().map(|reply| reply.ip)
}

fn eventually_seen_as(s: &EgressSetup, name: &str, expected: Ipv4Addr, what: &str) {
    eventually(what, MOVE_TIMEOUT, || seen_from(s, name) == Some(expected));
}

#[test]
fn each_pod_leaves_through_the_gateway_its_label_chooses_and_moves_with_it() {
    let mut s = start(GatewayOptions { listed: vec!["w1".into()], joined: vec![], ..options() });
    let b = second_gateway(&mut s);
    let (gateway_a, gateway_b) = (s.gateway_ip(), b.pod.ip);
    let dir = TempDir::new("several-gateways").unwrap();
    let labels = |name: &str| dir.path().join(format!("{name}.labels"));
    write_labels(&labels("w1"), &[("app", "web"), DEFAULT]);
    write_labels(&labels("w2"), &[("app", "web")]);
    write_labels(&labels("w3"), &[("app", "batch"), TEAM_B]);
    b.pods_file.write(&[(s.pod("w3").ip, "w3")]).unwrap();
    let _sidecars: Vec<Daemon> =
        ["w1", "w2", "w3"].iter().map(|n| follow_labels(&s, n, &labels(n))).collect();

    eventually_seen_as(&s, "w1", gateway_a, "w1 (egress=external) leaves from gateway A");
    eventually_seen_as(&s, "w3", gateway_b, "w3 (egress=team-b) leaves from gateway B");
    let direct = seen_from(&s, "w2").expect("w2, unlabeled, egresses directly");
    assert!(![gateway_a, gateway_b].contains(&direct), "w2 is unlabeled and went through a gateway");

    // w3's team changes: its label says so, both gateways' watchers see it.
    write_labels(&labels("w3"), &[("app", "batch"), DEFAULT]);
    s.set_listed(&["w1", "w3"]).unwrap();
    b.pods_file.write(&[]).unwrap();
    eventually_seen_as(&s, "w3", gateway_a, "w3, relabeled egress=external, moves to gateway A");
    for _ in 0..5 {
        assert_eq!(seen_from(&s, "w3"), Some(gateway_a), "w3 stays on gateway A");
    }
    assert_eq!(seen_from(&s, "w1"), Some(gateway_a), "w1 was not moved");
}

/// A pod that points its tunnel at a gateway whose selector it does not
/// match (a hostile or a misconfigured one) gets nothing out, and that
/// gateway says why.
#[test]
fn a_pod_cannot_use_a_gateway_that_does_not_list_it() {
    let mut s = start(GatewayOptions { listed: vec!["w1".into()], joined: vec!["w1".into()], ..options() });
    let b = second_gateway(&mut s);
    b.pods_file.write(&[(s.pod("w3").ip, "w3")]).unwrap();
    let join_b = JoinArgs { gateway: VIP_B.to_string(), ..s.join_args() };
    agent::join(&s.pod("w1").ns, &s.agent_binary, &join_b).unwrap();
    let before = b.agent.status().unwrap().counter("drop_unknown_client").unwrap();
    assert!(seen_from(&s, "w1").is_none(), "w1 is listed by gateway A only, yet egressed through B");
    let after = b.agent.status().unwrap().counter("drop_unknown_client").unwrap();
    assert!(after > before, "gateway B dropped w1's tunnel packets as an unknown client");
    // Back on its own gateway, it egresses with A's address.
    agent::join(&s.pod("w1").ns, &s.agent_binary, &s.join_args()).unwrap();
    assert_eq!(seen_from(&s, "w1"), Some(s.gateway_ip()));
}
