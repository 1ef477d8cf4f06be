//! Brings up the default namespace cluster for manual exploration and keeps
//! it until Ctrl-C / SIGTERM, then removes it (also the way to clear the
//! leftovers of a crashed run: `cluster-up --cleanup PREFIX`).
//!
//! Usage: `cluster-up [--prefix NAME]` or `cluster-up --cleanup PREFIX`.

use anyhow::{bail, Result};
use egress_tests::netns;
use egress_tests::topology::{Cluster, ClusterConfig};

fn main() {
    if let Err(e) = run() {
        eprintln!("cluster-up: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut config = ClusterConfig::default();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => {}
        ["--prefix", p] => config.prefix = p.to_string(),
        ["--cleanup", p] => {
            println!("removed {} namespaces", netns::cleanup_prefix(p));
            return Ok(());
        }
        _ => bail!("usage: cluster-up [--prefix NAME] | --cleanup PREFIX"),
    }
    // The default prefix is per process: cover it (and anything else this
    // process creates) with the run prefix, as `cargo xtask demo` does.
    let cleanup = if config.prefix.starts_with(&netns::run_prefix()) {
        netns::run_prefix()
    } else {
        config.prefix.clone()
    };
    netns::install_signal_cleanup(&cleanup)?;
    let cluster = Cluster::build(config)?;
    println!("cluster {} is up (Ctrl-C removes it):", cluster.prefix());
    for node in cluster.nodes() {
        println!(
            "  node {:8} ns {:28} pods {} bridge {}",
            node.name,
            node.ns.name(),
            node.pod_cidr,
            node.bridge_ip
        );
    }
    for pod in cluster.pods() {
        println!(
            "  pod  {:8} ns {:28} ip {} on {}",
            pod.name,
            pod.ns.name(),
            pod.ip,
            cluster.node(pod.node).name
        );
    }
    println!("  outside     ns {:28} servers {:?}", cluster.outside().name(), cluster.server_ips());
    println!(
        "  service VIP {}:{}/udp -> {}",
        cluster.service_vip(),
        cluster.service_port(),
        cluster.gateway().ip
    );
    println!("e.g.: ip netns exec {} ping {}", cluster.pod("w1").ns.name(), cluster.server_ip());
    loop {
        std::thread::park();
    }
}
