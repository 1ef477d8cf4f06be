//! `cargo xtask demo`: a small namespace "cluster" on this machine, the
//! agent fed from a pods file, and real clients showing what happens.
//! Everything is torn down at the end, on failure, and on Ctrl-C.
use std::time::Duration;

use anyhow::{Context, Result};
use egress_tests::{
    clients::{curl_echo, ping},
    netns,
    scenario::{EgressSetup, GatewayOptions},
    topology::ClusterConfig,
};

use crate::{run::is_root, toolchain};

fn say(text: &str) {
    println!("\n==> {text}");
}

pub fn run() -> Result<()> {
    if !is_root() {
        anyhow::bail!(
            "the demo creates network namespaces and loads an eBPF program: run `cargo xtask demo` as root"
        );
    }
    egress_tests::tools::ensure_packages()?;
    toolchain::build_all()?;
    let prefix = netns::run_prefix();
    netns::install_signal_cleanup(&prefix)?;

    say("building a namespace cluster: two nodes with pod bridges, a Service VIP (iptables DNAT, like kube-proxy), an outside server");
    let options = GatewayOptions {
        cluster: ClusterConfig::default(),
        listed: vec!["w1".into()],
        joined: vec!["w1".into(), "w2".into()],
        agent_binary: Some(toolchain::agent_binary()),
        echo_server: Some(crate::run::workspace_root().join("target/release/echo-server")),
        ..GatewayOptions::default()
    };
    let setup = EgressSetup::start(options).context("starting the demo cluster")?;
    let server = setup.server_ip();
    let w1 = setup.pod("w1");
    let w2 = setup.pod("w2");
    println!(
        "    gateway pod {} (egress-agent gateway running), listed worker w1 {}, unlisted worker w2 {}, outside server {server}, Service VIP {}",
        setup.gateway_ip(),
        w1.ip,
        w2.ip,
        setup.cluster.service_vip()
    );
    println!("    both workers ran `egress-agent join --gateway {}`", setup.cluster.service_vip());

    say(&format!("w1 (listed): curl http://{server}/ — the server reports who connected"));
    let seen = curl_echo(&w1.ns, server, Duration::from_secs(5)).context("curl from w1")?;
    println!(
        "    server saw {}:{}  (w1 is {}, the gateway is {})",
        seen.ip,
        seen.port,
        w1.ip,
        setup.gateway_ip()
    );
    anyhow::ensure!(seen.ip == setup.gateway_ip(), "expected the gateway's address, got {}", seen.ip);
    ping(&w1.ns, server, 2).context("ping from w1")?;
    println!("    ping {server} from w1: ok");

    say(&format!(
        "w2 (not listed): curl http://{server}/ — dropped at the gateway, never sent with another address"
    ));
    match curl_echo(&w2.ns, server, Duration::from_secs(2)) {
        Ok(seen) => anyhow::bail!("w2 should have been dropped, but the server saw {}", seen.ip),
        Err(_) => println!(
            "    no answer (as intended); drop_unknown_client = {}",
            setup.counter("drop_unknown_client")?
        ),
    }

    say("egress-agent status (in the gateway pod)");
    let out = setup.cluster.gateway().ns.output(&[setup.agent_binary.to_str().unwrap(), "status"])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));

    say("cleaning up (agent stopped, namespaces deleted)");
    drop(setup);
    netns::cleanup_prefix(&prefix);
    println!("demo done");
    Ok(())
}
