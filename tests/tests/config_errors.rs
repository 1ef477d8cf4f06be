//! Configuration a user can get wrong is refused at start: a non-zero exit
//! and one line on stderr that names the mistake, before the agent touches
//! the kernel (no program loaded, no device created).

use std::time::Duration;

use egress_tests::agent::agent_binary;
use egress_tests::netns::unique_prefix;
use egress_tests::scenario::PodsFile;
use egress_tests::{require_root, Netns};

/// A gateway pod's namespace: `eth0` with an address, `bare0` without one,
/// its ephemeral ports at the top as the manifests set them.
fn pod_namespace() -> Netns {
    if let Err(e) = require_root() {
        panic!("{e:#}");
    }
    let ns = Netns::create(&format!("{}-cfg", unique_prefix())).unwrap();
    ns.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]).unwrap();
    ns.ip(&["addr", "add", "10.78.0.2/24", "dev", "eth0"]).unwrap();
    ns.ip(&["link", "add", "bare0", "type", "veth", "peer", "name", "peer1"]).unwrap();
    for dev in ["eth0", "peer0", "bare0", "peer1"] {
        ns.ip(&["link", "set", dev, "up"]).unwrap();
    }
    ns.sysctls(&[("net.ipv4.ip_local_port_range", "64512 65535")]).unwrap();
    ns
}

/// Runs `egress-agent gateway ARGS` and returns its stderr, checking that
/// it failed within seconds with exactly one line.
fn refused(ns: &Netns, args: &[&str]) -> String {
    let agent = agent_binary().unwrap();
    let mut argv = vec!["timeout".to_string(), "20".into(), agent.display().to_string(), "gateway".into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let started = std::time::Instant::now();
    let out = ns.output(&argv).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(!out.status.success(), "`gateway {}` started; stderr: {stderr}", args.join(" "));
    assert_ne!(out.status.code(), Some(124), "`gateway {}` hung instead of refusing", args.join(" "));
    assert!(started.elapsed() < Duration::from_secs(10));
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line for `gateway {}`, got:\n{stderr}", args.join(" "));
    assert!(lines[0].starts_with("egress-agent: error: "), "{stderr}");
    stderr
}

#[test]
fn bad_configuration_is_refused_with_one_line() {
    let ns = pod_namespace();
    let pods_file = PodsFile::create().unwrap();
    let pods = pods_file.path().to_str().unwrap().to_string();
    let bad_pods = pods_file.path().with_file_name("bad-pods.txt");
    std::fs::write(&bad_pods, "10.0.0.1 ok\nnot-an-address worker\n").unwrap();
    let bad_pods = bad_pods.to_str().unwrap().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["--pods-file", &pods, "--exclude-cidr", "10.0.0.0/33"], "invalid CIDR \"10.0.0.0/33\""),
        (
            &["--pods-file", &pods, "--exclude-cidr", "fd00::/129"],
            "invalid CIDR \"fd00::/129\": prefix length must be 0-128",
        ),
        (
            &["--pods-file", &pods, "--nat-ports", "60000-65000"],
            "overlaps this pod's ephemeral ports 64512-65535",
        ),
        (&["--pods-file", &pods, "--nat-ports", "40000-30000"], "invalid --nat-ports"),
        (&["--pods-file", &pods, "--vxlan-port", "20000"], "inside --nat-ports"),
        (&["--pods-file", &pods, "--vni", "0"], "invalid --vni"),
        (&["--pods-file", &pods, "--port-retries", "0"], "invalid --port-retries 0: must be 1-128"),
        (&["--pods-file", &pods, "--port-retries", "500"], "invalid --port-retries 500: must be 1-128"),
        (&["--pods-file", &pods, "--metrics-addr", "everywhere"], "invalid --metrics-addr"),
        (
            &["--pods-file", &pods, "--nat-ports", "9000-10000"],
            "--metrics-addr port 9090 is inside --nat-ports",
        ),
        (&["--pods-file", &pods, "--status-addr", "0.0.0.0:9091"], "is not a loopback address"),
        (&["--pods-file", &pods, "--status-addr", "somewhere"], "invalid --status-addr"),
        (&["--pods-file", &pods, "--tcp-closing-timeout-s", "1"], "--tcp-closing-timeout-s 1 is too short"),
        (&["--pods-file", &pods, "--udp-timeout-s", "0"], "--udp-timeout-s 0 is too short"),
        (&["--pods-file", &pods, "--max-flows-per-client", "0"], "invalid --max-flows-per-client 0"),
        (
            &["--pods-file", &pods, "--conntrack-size", "2048", "--max-flows-per-client", "4096"],
            "must be 1 to --conntrack-size (2048)",
        ),
        (&["--pods-file", &pods, "--interface", "nope0"], "interface nope0 not found"),
        (
            &["--pods-file", &pods, "--interface", "bare0"],
            "interface bare0 has neither an IPv4 nor a global IPv6",
        ),
        (&["--pods-file", "/nonexistent/pods.txt"], "/nonexistent/pods.txt"),
        (&["--pods-file", "/"], "cannot read pods file /"),
        (&["--pods-file", &bad_pods], "line 2: \"not-an-address\" is not an IP address"),
        (&["--selector", "tier in (web"], "invalid --selector"),
        (&["--selector", ""], "--selector is empty"),
        (&["--namespace-selector", "a=b=c"], "invalid --namespace-selector"),
    ];
    for (args, expected) in cases {
        let stderr = refused(&ns, args);
        eprintln!("gateway {}\n    {stderr}", args.join(" "));
        assert!(
            stderr.contains(expected),
            "`gateway {}`: expected {expected:?} in {stderr:?}",
            args.join(" ")
        );
    }
    // A pod left at Linux's default ephemeral ports is told which range the
    // default NAT ports need.
    ns.sysctls(&[("net.ipv4.ip_local_port_range", "32768 60999")]).unwrap();
    let stderr = refused(&ns, &["--pods-file", &pods]);
    assert!(
        stderr.contains(
            "--nat-ports 10240-64511 overlaps this pod's ephemeral ports 32768-60999: set net.ipv4.ip_local_port_range to \"64512 65535\""
        ),
        "{stderr}"
    );
    // Nothing was set up on the way to refusing.
    let links = ns.ip(&["-o", "link", "show"]).unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains("egressgro"), "no GRO stage left behind");
}
