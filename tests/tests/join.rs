//! `egress-agent join` on its own: the routes and device it leaves in a pod
//! namespace, on pod networks other than the bridge one the cluster uses.
use egress_tests::{agent::agent_binary, netns, require_root, Netns};
use std::time::Duration;

use serde_json::Value;

/// A pod namespace shaped like Calico's: a /32 address and a link-local
/// next hop that is not inside any of the pod's subnets.
fn calico_style_pod() -> (Netns, Netns) {
    require_root().unwrap_or_else(|e| panic!("{e:#}"));
    let prefix = netns::unique_prefix();
    let node = Netns::create(&format!("{prefix}-node")).unwrap();
    let pod = Netns::create(&format!("{prefix}-pod")).unwrap();
    let host_if = format!("{prefix}h");
    std::process::Command::new("ip")
        .args(["link", "add", "eth0", "netns", pod.name(), "type", "veth", "peer", "name", &host_if])
        .args(["netns", node.name()])
        .status()
        .unwrap();
    node.ip(&["link", "set", &host_if, "up"]).unwrap();
    pod.ip(&["addr", "add", "10.50.3.7/32", "dev", "eth0"]).unwrap();
    pod.ip(&["link", "set", "eth0", "mtu", "1440", "up"]).unwrap();
    pod.ip(&["route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"]).unwrap();
    pod.ip(&["route", "add", "default", "via", "169.254.1.1", "dev", "eth0"]).unwrap();
    (node, pod)
}

fn join_to(pod: &Netns, gateway: &str, vni: &str) {
    let bin = agent_binary().unwrap_or_else(|e| panic!("{e:#}"));
    let bin = bin.to_str().unwrap();
    pod.exec(&[bin, "join", "--gateway", gateway, "--cluster-cidr", "10.50.0.0/16", "--vni", vni])
        .unwrap_or_else(|e| panic!("join failed: {e:#}"));
}

fn join(pod: &Netns, vni: &str) {
    join_to(pod, "10.96.0.10", vni);
}

fn routes(pod: &Netns) -> Vec<Value> {
    let out = pod.ip(&["-j", "route", "show"]).unwrap();
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

fn route<'a>(routes: &'a [Value], dst: &str) -> &'a Value {
    routes.iter().find(|r| r["dst"] == dst).unwrap_or_else(|| panic!("no route to {dst} in {routes:#?}"))
}

fn tunnel_device(pod: &Netns) -> Value {
    let out = pod.ip(&["-j", "-d", "link", "show", "egress0"]).unwrap();
    serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone()
}

#[test]
fn join_works_on_a_calico_style_pod_and_is_idempotent() {
    let (_node, pod) = calico_style_pod();
    join(&pod, "4242");

    let r = routes(&pod);
    assert_eq!(route(&r, "default")["dev"], "egress0", "external traffic goes into the tunnel");
    assert_eq!(route(&r, "default")["prefsrc"], "10.50.3.7", "and leaves as the pod's own address");
    for dst in ["10.50.0.0/16", "10.96.0.10"] {
        let cluster = route(&r, dst);
        assert_eq!(
            (cluster["dev"].as_str(), cluster["gateway"].as_str()),
            (Some("eth0"), Some("169.254.1.1")),
            "{dst}"
        );
    }
    let dev = tunnel_device(&pod);
    assert_eq!(dev["mtu"], 1390, "eth0's MTU minus the 50-byte tunnel");
    assert_eq!(
        dev["address"], "06:65:0a:32:03:07",
        "a MAC derived from the pod IP, stable across re-creation"
    );
    let vxlan = &dev["linkinfo"]["info_data"];
    assert_eq!(vxlan["id"], 4242);
    assert_eq!(vxlan["remote"], "10.96.0.10");
    assert_eq!(vxlan["port"], 4789);
    let neigh = pod.ip(&["neigh", "show", "dev", "egress0"]).unwrap();
    assert!(
        String::from_utf8_lossy(&neigh.stdout).contains("169.254.42.1 lladdr 02:65:67:77:00:01 PERMANENT")
    );

    // Again: the same state, the same device (not re-created).
    let ifindex = dev["ifindex"].clone();
    join(&pod, "4242");
    assert_eq!(tunnel_device(&pod)["ifindex"], ifindex, "an unchanged device is kept");
    assert_eq!(routes(&pod).len(), r.len(), "no routes added twice");

    // Other settings: the device is replaced to match.
    join(&pod, "77");
    let dev = tunnel_device(&pod);
    assert_eq!(dev["linkinfo"]["info_data"]["id"], 77);
    assert_ne!(dev["ifindex"], ifindex, "re-created");
    assert_eq!(dev["address"], "06:65:0a:32:03:07", "with the same MAC");
    assert_eq!(route(&routes(&pod), "default")["dev"], "egress0");

    // Another gateway address (a re-created Service): the tunnel follows it,
    // and the new address is kept on eth0 too.
    join_to(&pod, "10.96.0.99", "77");
    assert_eq!(tunnel_device(&pod)["linkinfo"]["info_data"]["remote"], "10.96.0.99");
    assert_eq!(route(&routes(&pod), "10.96.0.99")["dev"], "eth0");
}

#[test]
fn join_refuses_bad_input_with_one_line() {
    let (_node, pod) = calico_style_pod();
    let bin = agent_binary().unwrap_or_else(|e| panic!("{e:#}"));
    let out = pod
        .output(&[bin.to_str().unwrap(), "join", "--gateway", "10.96.0.10", "--cluster-cidr", "10.50.0.0/33"])
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("10.50.0.0/33"), "{err}");
    assert!(routes(&pod).iter().any(|r| r["dst"] == "default" && r["dev"] == "eth0"), "nothing changed");

    // Another gateway for every pod (an empty selector), or for a selector
    // that does not parse: refused before anything changes.
    for (selector, what) in [("", "an empty selector"), ("egress in (", "invalid --gateway-for selector")] {
        let args = [
            bin.to_str().unwrap(),
            "join",
            "--gateway",
            "10.96.0.10",
            "--gateway-for",
            selector,
            "10.96.0.20",
        ];
        let out = pod.output(&args).unwrap();
        assert!(!out.status.success(), "--gateway-for {selector:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(what), "{err}");
    }
    // --replicas belongs to the sidecar: a one-shot join cannot probe.
    let args = [bin.to_str().unwrap(), "join", "--gateway", "10.96.0.10", "--replicas", "gw.example.svc"];
    let out = pod.output(&args).unwrap();
    assert!(!out.status.success(), "--replicas without --follow accepted");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("--replicas is for the --follow sidecar"), "{err}");
    assert!(pod.ip(&["link", "show", "egress0"]).is_err(), "nothing changed");
}

/// Writes a Downward API `metadata.labels` file (`key="value"` lines).
fn write_labels(path: &std::path::Path, labels: &[(&str, &str)]) {
    let text: String = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn labels_file() -> egress_tests::util::TempDir {
    egress_tests::util::TempDir::new("join-labels").unwrap()
}

fn join_with_labels(pod: &Netns, labels: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let bin = agent_binary().unwrap_or_else(|e| panic!("{e:#}"));
    let mut args =
        vec![bin.to_str().unwrap(), "join", "--gateway", "10.96.0.10", "--cluster-cidr", "10.50.0.0/16"];
    args.extend(["--labels-file", labels.to_str().unwrap(), "--selector", "egress=external"]);
    args.extend(extra);
    pod.exec(&args).unwrap_or_else(|e| panic!("join failed: {e:#}"))
}

#[test]
fn the_label_decides_join_or_leave() {
    let (_node, pod) = calico_style_pod();
    let dir = labels_file();
    let labels = dir.path().join("labels");

    // Unlabeled: nothing changes, and the gateway is not even resolved (an
    // unresolvable name must not keep unlabeled pods from starting).
    write_labels(&labels, &[("app", "web")]);
    let bin = agent_binary().unwrap();
    let out = pod
        .exec(&[
            bin.to_str().unwrap(),
            "join",
            "--gateway",
            "no-such-gateway.invalid",
            "--labels-file",
            labels.to_str().unwrap(),
        ])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not joined"));
    assert_eq!(route(&routes(&pod), "default")["dev"], "eth0");
    assert!(pod.ip(&["link", "show", "egress0"]).is_err(), "no tunnel device for an unlabeled pod");

    // Labeled: joined.
    write_labels(&labels, &[("app", "web"), ("egress", "external")]);
    join_with_labels(&pod, &labels, &[]);
    assert_eq!(route(&routes(&pod), "default")["dev"], "egress0");

    // The label removed: the next run leaves, and the default route goes
    // back to the node before the device is deleted.
    write_labels(&labels, &[("app", "web")]);
    let out = join_with_labels(&pod, &labels, &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("left"), "{out:?}");
    let r = routes(&pod);
    let default = route(&r, "default");
    assert_eq!((default["dev"].as_str(), default["gateway"].as_str()), (Some("eth0"), Some("169.254.1.1")));
    assert!(pod.ip(&["link", "show", "egress0"]).is_err(), "tunnel device removed");
}

#[test]
fn follow_moves_a_running_pod_onto_and_off_the_gateway() {
    let (_node, pod) = calico_style_pod();
    let dir = labels_file();
    let labels = dir.path().join("labels");
    write_labels(&labels, &[("app", "web")]);
    let bin = agent_binary().unwrap();
    let args = [
        bin.to_str().unwrap(),
        "join",
        "--gateway",
        "10.96.0.10",
        "--cluster-cidr",
        "10.50.0.0/16",
        "--labels-file",
        labels.to_str().unwrap(),
        "--follow",
    ];
    let _sidecar = egress_tests::Daemon::spawn(&pod, "join-follow", &args).unwrap();
    let default_dev = || routes(&pod).iter().find(|r| r["dst"] == "default").map(|r| r["dev"].clone());
    let wait_for = |dev: &str| {
        let via_dev = || Ok(default_dev().is_some_and(|d| d == dev).then_some(()));
        egress_tests::util::wait_for(
            &format!("the default route via {dev}"),
            Duration::from_secs(15),
            Duration::from_millis(200),
            via_dev,
        )
        .unwrap_or_else(|e| panic!("{e:#}; now {:?}", default_dev()))
    };
    wait_for("eth0");
    write_labels(&labels, &[("app", "web"), ("egress", "external")]);
    wait_for("egress0");
    write_labels(&labels, &[("app", "web")]);
    wait_for("eth0");
    assert!(pod.ip(&["link", "show", "egress0"]).is_err(), "tunnel device removed on rollback");
}

/// A dual-stack pod behind a router namespace, with an "outside" server at
/// [fd00:99::10]:80 and a cluster address [fd00:96::10]:80 on the router:
/// (router, pod, outside, the two echo servers).
fn dual_stack_pod() -> (Netns, Netns, Netns, [egress_tests::Daemon; 2]) {
    require_root().unwrap_or_else(|e| panic!("{e:#}"));
    let prefix = netns::unique_prefix();
    let router = Netns::create(&format!("{prefix}-rtr")).unwrap();
    let pod = Netns::create(&format!("{prefix}-pod")).unwrap();
    let outside = Netns::create(&format!("{prefix}-out")).unwrap();
    let veth = |a: &Netns, a_if: &str, b: &Netns, b_if: &str| {
        a.ip(&["link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name()]).unwrap();
        a.ip(&["link", "set", a_if, "up"]).unwrap();
        b.ip(&["link", "set", b_if, "up"]).unwrap();
    };
    veth(&router, "pod0", &pod, "eth0");
    veth(&router, "out0", &outside, "eth0");
    router.sysctls(&[("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1")]).unwrap();
    for (ns, addr, dev) in [
        (&router, "10.50.3.1/24", "pod0"),
        (&pod, "10.50.3.7/24", "eth0"),
        (&router, "fd00:50::1/64", "pod0"),
        (&pod, "fd00:50::7/64", "eth0"),
        (&router, "fd00:99::1/64", "out0"),
        (&outside, "fd00:99::10/64", "eth0"),
        (&router, "fd00:96::10/128", "lo"),
    ] {
        ns.ip(&["addr", "add", addr, "dev", dev, "nodad"]).unwrap();
    }
    pod.ip(&["route", "add", "default", "via", "10.50.3.1"]).unwrap();
    pod.ip(&["-6", "route", "add", "default", "via", "fd00:50::1"]).unwrap();
    outside.ip(&["-6", "route", "add", "default", "via", "fd00:99::1"]).unwrap();
    let echo = |ns: &Netns, addr: &str| {
        let bin = env!("CARGO_BIN_EXE_echo-server");
        let mut daemon = egress_tests::Daemon::spawn(ns, "echo-server", &[bin, "--bind", addr]).unwrap();
        daemon.wait_for_line("ready", Duration::from_secs(10), |l| l.contains("echo-server ready")).unwrap();
        daemon
    };
    let servers = [echo(&outside, "fd00:99::10"), echo(&router, "fd00:96::10")];
    (router, pod, outside, servers)
}

fn curl6(pod: &Netns, url: &str) -> Result<String, String> {
    egress_tests::clients::curl(pod, url, Duration::from_secs(3)).map_err(|e| format!("{e:#}"))
}

#[test]
fn a_labeled_pod_s_external_ipv6_is_closed_and_reopened_when_it_leaves() {
    let (_router, pod, outside, _servers) = dual_stack_pod();
    let (external, cluster) = ("http://[fd00:99::10]/", "http://[fd00:96::10]/");
    curl6(&pod, external).expect("before the label, IPv6 goes out directly");
    let dir = labels_file();
    let labels = dir.path().join("labels");
    write_labels(&labels, &[("egress", "external")]);
    join_with_labels(&pod, &labels, &["--cluster-cidr", "fd00:96::/112"]);

    // Joined: external IPv6 fails at once, and the server sees nothing;
    // the cluster's IPv6 range stays reachable.
    let accepted = |ns: &Netns| ns.tcp_counters().unwrap()["PassiveOpens"];
    let before = accepted(&outside);
    let started = std::time::Instant::now();
    let err = curl6(&pod, external).expect_err("a labeled pod's IPv6 went out directly");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "IPv6 hung for {:?} instead of failing",
        started.elapsed()
    );
    assert!(err.contains("unreachable") || err.contains("Couldn't connect"), "{err}");
    assert_eq!(accepted(&outside), before, "the outside server saw a connection");
    curl6(&pod, cluster).expect("the cluster's IPv6 range is kept on eth0");
    let again = join_with_labels(&pod, &labels, &["--cluster-cidr", "fd00:96::/112"]);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("IPv6: external traffic of this pod is unreachable")
    );
    assert!(curl6(&pod, external).is_err(), "a re-run opened IPv6");

    // The label removed: IPv6 goes out directly again.
    write_labels(&labels, &[]);
    join_with_labels(&pod, &labels, &["--cluster-cidr", "fd00:96::/112"]);
    curl6(&pod, external).expect("after the label, IPv6 goes out directly again");

    // A /1 of the pod's own (a VPN's split default, say) is not ours:
    // leaving again keeps it.
    pod.ip(&["-6", "route", "add", "8000::/1", "dev", "eth0"]).unwrap();
    join_with_labels(&pod, &labels, &["--cluster-cidr", "fd00:96::/112"]);
    let kept = pod.ip(&["-6", "route", "show", "8000::/1"]).unwrap();
    assert!(
        String::from_utf8_lossy(&kept.stdout).contains("8000::/1 dev eth0"),
        "leave deleted the pod's own 8000::/1"
    );
}

#[test]
fn ipv6_route_goes_into_the_tunnel_over_an_unreachable_floor() {
    let (_router, pod, outside, _servers) = dual_stack_pod();
    let external = "http://[fd00:99::10]/";
    let dir = labels_file();
    let labels = dir.path().join("labels");
    write_labels(&labels, &[("egress", "external")]);
    let route6 = ["--cluster-cidr", "fd00:96::/112", "--ipv6", "route"];
    let out = join_with_labels(&pod, &labels, &route6);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("IPv6: external traffic of fd00:50::7 goes through egress0 too"), "{stdout}");

    let show = |args: &[&str]| String::from_utf8_lossy(&pod.ip(args).unwrap().stdout).into_owned();
    let routes = show(&["-6", "route", "show"]);
    for half in ["::/1", "8000::/1"] {
        let through = format!("{half} via fe80::42:1 dev egress0 src fd00:50::7 metric 1024");
        assert!(routes.contains(&through), "no {through:?} in {routes}");
        let floor = format!("unreachable {half} dev lo metric 4096");
        assert!(routes.contains(&floor), "no {floor:?} in {routes}");
    }
    let neigh = show(&["-6", "neigh", "show", "dev", "egress0"]);
    assert!(neigh.contains("fe80::42:1 lladdr 02:65:67:77:00:01 PERMANENT"), "{neigh}");
    assert_eq!(show(&["-6", "addr", "show", "dev", "egress0"]), "", "egress0 has no IPv6 address of its own");
    assert!(show(&["-6", "route", "get", "fd00:99::10"]).contains("dev egress0"));
    assert!(
        show(&["-6", "route", "get", "fd00:96::10"]).contains("dev eth0"),
        "the cluster range stays on eth0"
    );

    // No gateway answers here: the pod's IPv6 goes into the tunnel and
    // nowhere else.
    let accepted = |ns: &Netns| ns.tcp_counters().unwrap()["PassiveOpens"];
    let before = accepted(&outside);
    assert!(curl6(&pod, external).is_err());
    assert_eq!(accepted(&outside), before, "the outside server saw a connection");

    // The device goes down and the kernel flushes the routes through it:
    // the floor keeps external IPv6 closed, and failing at once.
    pod.ip(&["link", "set", "egress0", "down"]).unwrap();
    let started = std::time::Instant::now();
    let err = curl6(&pod, external).expect_err("IPv6 went out directly with the tunnel down");
    assert!(started.elapsed() < Duration::from_secs(1), "hung for {:?}: {err}", started.elapsed());
    assert_eq!(accepted(&outside), before, "the outside server saw a connection");

    // A re-run puts the tunnel back; --ipv6 unreachable closes it again,
    // the halves replaced in place.
    join_with_labels(&pod, &labels, &route6);
    assert!(show(&["-6", "route", "get", "fd00:99::10"]).contains("dev egress0"));
    join_with_labels(&pod, &labels, &["--cluster-cidr", "fd00:96::/112"]);
    let half = show(&["-6", "route", "show", "::/1"]);
    assert!(half.contains("unreachable") && !half.contains("egress0"), "{half}");

    // The label removed: every route of ours goes, IPv6 goes out directly.
    write_labels(&labels, &[]);
    join_with_labels(&pod, &labels, &route6);
    curl6(&pod, external).expect("after the label, IPv6 goes out directly again");
    let routes = show(&["-6", "route", "show"]);
    let half = |line: &str| line.split_whitespace().any(|word| word == "::/1" || word == "8000::/1");
    assert!(!routes.lines().any(half), "a half of ours is left: {routes}");
}

#[test]
fn ipv6_route_is_refused_where_it_cannot_work() {
    let (_router, pod, _outside, _servers) = dual_stack_pod();
    let bin = agent_binary().unwrap_or_else(|e| panic!("{e:#}"));
    let bin = bin.to_str().unwrap();
    let one_line_refusal = |args: &[&str], what: &str| {
        let out = pod.output(args).unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(what), "{err}");
        assert!(pod.ip(&["link", "show", "egress0"]).is_err(), "nothing changed");
    };
    // The replicas sidecar counts and aborts IPv4 connections only.
    let replicas = [bin, "join", "--gateway", "10.96.0.10", "--follow", "--replicas", "gw.example.svc"];
    one_line_refusal(&[&replicas[..], &["--ipv6", "route"]].concat(), "does not go with --replicas");
    // A tunnel below IPv6's minimum MTU (1280 + 50 on eth0).
    pod.ip(&["link", "set", "eth0", "mtu", "1320"]).unwrap();
    let route6 =
        [bin, "join", "--gateway", "10.96.0.10", "--cluster-cidr", "10.50.0.0/16", "--ipv6", "route"];
    one_line_refusal(&route6, "below IPv6's minimum");
}

#[test]
fn ipv6_route_without_a_global_ipv6_address_stays_unreachable() {
    // Calico-style IPv4 pod: IPv6 on, link-local only.
    let (_node, pod) = calico_style_pod();
    let bin = agent_binary().unwrap_or_else(|e| panic!("{e:#}"));
    let args = [bin.to_str().unwrap(), "join", "--gateway", "10.96.0.10", "--ipv6", "route"];
    let out = pod.exec(&args).unwrap_or_else(|e| panic!("join failed: {e:#}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("unreachable (the pod has no global IPv6 address to route from)"), "{stdout}");
}
