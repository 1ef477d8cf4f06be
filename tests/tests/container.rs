//! The shipped image, run under podman exactly as the rendered manifests
//! say: the gateway pod's state keeper and agent in the test cluster's
//! gateway namespace, the worker example's join and follow containers in
//! worker namespaces, each with the args, user, capabilities, read-only
//! root, privilege escalation, seccomp profile, sysctls and volumes that
//! `kubectl kustomize` gives it (`podman::kubelet_flags`). Only what a
//! cluster supplies is stood in for: the pod list (`--pods-file` on a
//! folder, instead of the API server), the Services' DNS names
//! (`--add-host`), the emptyDir (a folder on /dev/shm, which is tmpfs) and
//! the downward API's labels file.
//!
//! The image is `$EGRESS_IMAGE`, which `cargo xtask test` builds (`cargo
//! xtask image`) and sets; without it this says SKIPPED and passes.
use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use egress_tests::{
    agent::is_ready_line,
    clients,
    kustomize::{container, expanded_args, relative, render, Rendered},
    podman::{kubelet_flags, Podman},
    process::Daemon,
    scenario::PodsFile,
    topology::{Cluster, Pod},
    util::{workspace_root, TempDir},
};
use serde_json::Value;

const CURL_TIMEOUT: Duration = Duration::from_secs(3);

fn image() -> Option<String> {
    let image = std::env::var("EGRESS_IMAGE").ok().filter(|i| !i.is_empty());
    if image.is_none() {
        println!(
            "SKIPPED: the container test needs EGRESS_IMAGE (cargo xtask test builds the image and sets it)"
        );
    }
    image
}

/// `kubectl kustomize` of a scratch kustomization: `resource` (under
/// deploy/) with `components`.
fn render_with(resource: &str, components: &[&str]) -> Result<Rendered> {
    let kubectl = egress_tests::kubectl::kubectl()?;
    let deploy = workspace_root().join("deploy");
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "container-{}-{}",
        std::process::id(),
        egress_tests::util::next_id()
    ));
    std::fs::create_dir_all(&dir)?;
    let mut text = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {}\n",
        relative(&dir, &deploy.join(resource))
    );
    if !components.is_empty() {
        text += "components:\n";
        for component in components {
            text += &format!("  - {}\n", relative(&dir, &deploy.join(component)));
        }
    }
    std::fs::write(dir.join("kustomization.yaml"), text)?;
    let objects = render(&kubectl, &dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Rendered { name: format!("{resource}+{components:?}"), objects })
}

/// The namespace cluster, the outside's echo server, and the pod list
/// (what the API server would give the agent) naming the pods `listed`.
fn cluster_listing(listed: &[&str]) -> Result<(Cluster, Daemon, PodsFile)> {
    let cluster = Cluster::build_default()?;
    let echo =
        clients::start_echo_server(cluster.outside(), &clients::echo_server_binary()?, cluster.server_ips())?;
    let pods_file = PodsFile::create()?;
    let entries: Vec<_> = listed.iter().map(|name| (cluster.pod(name).ip, *name)).collect();
    pods_file.write(&entries)?;
    Ok((cluster, echo, pods_file))
}

/// The worker example's Deployment (the one with the join containers).
fn worker_deployment(r: &Rendered) -> &Value {
    r.all("Deployment")
        .find(|d| {
            egress_tests::kustomize::all_containers(d)
                .iter()
                .any(|c| expanded_args_contain_join(c) && c["restartPolicy"] != "Always")
        })
        .expect("the worker example has a Deployment with a join init container")
}

fn expanded_args_contain_join(c: &Value) -> bool {
    c["args"].as_array().and_then(|a| a.first()).is_some_and(|a| a == "join")
}

/// The host name `--flag=NAME` names in `args`.
fn flag(args: &[String], flag: &str) -> String {
    egress_tests::kustomize::flag_values(args, flag)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
}

/// The downward API's labels file of one worker pod.
struct Labels {
    dir: TempDir,
}

impl Labels {
    fn new(labels: &[(&str, &str)]) -> Result<Labels> {
        let labels_dir = Labels { dir: TempDir::new("podinfo")? };
        labels_dir.set(labels)?;
        Ok(labels_dir)
    }

    /// Replaces the file as the kubelet does (a new file renamed over it).
    fn set(&self, labels: &[(&str, &str)]) -> Result<()> {
        let text: String = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect();
        let tmp = self.dir.path().join(".labels.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.dir.path().join("labels")).context("replacing the labels file")
    }
}

/// The emptyDir of the gateway pod: a folder on /dev/shm (tmpfs, like
/// `medium: Memory`), removed on drop.
struct MemoryVolume(PathBuf);

impl MemoryVolume {
    fn new(label: &str) -> Result<MemoryVolume> {
        let path = PathBuf::from(format!("/dev/shm/{}-{label}", egress_tests::netns::unique_prefix()));
        std::fs::create_dir_all(&path)?;
        Ok(MemoryVolume(path))
    }
}

impl Drop for MemoryVolume {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the worker example's join init container (to its end) and starts
/// its follow sidecar in each of `workers`, labeled for the gateway. Both
/// find the Services by name. Returns each worker's labels file.
fn join_workers(
    podman: &Podman,
    image: &str,
    rendered: &Rendered,
    cluster: &Cluster,
    workers: &[&Pod],
) -> Result<BTreeMap<String, Labels>> {
    let deployment = worker_deployment(rendered);
    let join = container(deployment, "egress-join");
    let follow = container(deployment, "egress-follow");
    let join_args = expanded_args(rendered, deployment, join);
    let follow_args = expanded_args(rendered, deployment, follow);
    let hosts = [
        "--add-host".to_string(),
        format!("{}:{}", flag(&join_args, "--gateway"), cluster.service_vip()),
        "--add-host".to_string(),
        format!("{}:{}", flag(&follow_args, "--replicas"), cluster.gateway().ip),
    ];
    let selector = flag(&join_args, "--selector");
    let (key, value) = selector.split_once('=').context("--selector is not key=value")?;
    let mut labels = BTreeMap::new();
    for worker in workers {
        let worker_labels = Labels::new(&[(key, value), ("app", "demo")])?;
        let volumes = BTreeMap::from([("podinfo", worker_labels.dir.path().to_path_buf())]);
        let mut flags = kubelet_flags(deployment, join, worker.ns.name(), &volumes)?;
        flags.insert(0, "--rm".into());
        flags.extend(hosts.iter().cloned());
        podman
            .start(&format!("join-{}", worker.name), &flags, image, &join_args)
            .with_context(|| format!("the join container in {}", worker.name))?;
        let mut flags = kubelet_flags(deployment, follow, worker.ns.name(), &volumes)?;
        flags.insert(0, "-d".into());
        flags.extend(hosts.iter().cloned());
        podman.start(&format!("follow-{}", worker.name), &flags, image, &follow_args)?;
        labels.insert(worker.name.clone(), worker_labels);
    }
    Ok(labels)
}

#[test]
fn the_image_runs_as_the_manifests_say() {
    let Some(image) = image() else { return };
    let gateway_default = render_with("overlays/example", &[]).unwrap();
    let gateway_unconfined = render_with("overlays/example", &["components/seccomp-unconfined"]).unwrap();
    let workers = render_with("examples/worker", &[]).unwrap();

    let (cluster, echo, pods_file) = cluster_listing(&["w1"]).unwrap();
    let (w1, w2) = (cluster.pod("w1").clone(), cluster.pod("w2").clone());
    let keeper_volume = MemoryVolume::new("keeper").unwrap();
    let gateway = cluster.gateway().clone();
    // Linux's default range: only the manifest's sysctl can move the
    // agent's own ports out of its NAT ports (it refuses to start else).
    gateway.ns.sysctls(&[("net.ipv4.ip_local_port_range", "32768 60999")]).unwrap();
    // Declared last, dropped first: the containers go before the namespaces.
    let podman = Podman::new(cluster.prefix()).unwrap();

    let volumes: BTreeMap<&str, PathBuf> = BTreeMap::from([("keeper", keeper_volume.0.clone())]);
    let pods_dir = pods_file.path().parent().unwrap().display().to_string();
    let pod_source = ["--volume".to_string(), format!("{pods_dir}:/etc/egress-pods:ro")];
    let pods_flag =
        format!("--pods-file=/etc/egress-pods/{}", pods_file.path().file_name().unwrap().to_string_lossy());

    // The state keeper, then the agent, as the pod starts them.
    let start_gateway = |rendered: &Rendered, name: &str| -> Result<()> {
        let gw = rendered.gateway().context("no gateway Deployment")?;
        let keeper = container(gw, "state-keeper");
        let mut flags = kubelet_flags(gw, keeper, gateway.ns.name(), &volumes)?;
        flags.insert(0, "-d".into());
        if !podman.running("keeper") {
            podman.start("keeper", &flags, &image, &expanded_args(rendered, gw, keeper))?;
            podman.wait_for_line("keeper", Duration::from_secs(10), |l| l.contains("listening"))?;
        }
        let agent = container(gw, "agent");
        let mut flags = kubelet_flags(gw, agent, gateway.ns.name(), &volumes)?;
        flags.insert(0, "-d".into());
        flags.extend(pod_source.iter().cloned());
        let mut args = expanded_args(rendered, gw, agent);
        args.push(pods_flag.clone());
        podman.start(name, &flags, &image, &args)?;
        Ok(())
    };

    // RuntimeDefault: podman's default profile (CRI-O's) allows bpf(2) only
    // with CAP_SYS_ADMIN; the agent must say so, and what to add.
    start_gateway(&gateway_default, "agent-runtime-default").unwrap();
    let code = podman.wait_exit("agent-runtime-default", Duration::from_secs(30)).unwrap();
    let log = podman.logs("agent-runtime-default");
    assert_ne!(code, 0, "the agent ran under the default profile:\n{log}");
    let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    assert!(
        last.contains("seccomp profile blocks it") && last.contains("deploy/components/seccomp-unconfined"),
        "the refusal does not name the profile and the component in one line:\n{log}"
    );

    // With the component: ready.
    start_gateway(&gateway_unconfined, "agent").unwrap();
    podman.wait_for_line("agent", Duration::from_secs(30), is_ready_line).unwrap();
    let range = gateway.ns.output(&["cat", "/proc/sys/net/ipv4/ip_local_port_range"]).unwrap();
    let range = String::from_utf8_lossy(&range.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    let wanted = egress_tests::kustomize::pod_spec(gateway_unconfined.gateway().unwrap())["securityContext"]
        ["sysctls"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(range, wanted, "the pod's sysctl was not applied");
    let status = podman.exec("agent", &["/usr/local/bin/egress-agent", "status"]).unwrap();
    assert!(status.contains(&format!("gateway {} on eth0, 1 clients", gateway.ip)), "status:\n{status}");

    let labels = join_workers(&podman, &image, &workers, &cluster, &[&w1, &w2]).unwrap();

    // The listed worker leaves with the gateway's address; the unlisted
    // one, joined all the same, is dropped.
    let reply = clients::curl_echo(&w1.ns, cluster.server_ip(), CURL_TIMEOUT).unwrap();
    assert_eq!(reply.ip, gateway.ip, "w1 did not egress with the gateway's address");
    assert!(
        clients::curl_echo(&w2.ns, cluster.server_ip(), CURL_TIMEOUT).is_err(),
        "the unlisted w2 got through the gateway"
    );

    // kill -9 of the agent container under a running upload: the keeper
    // container keeps the datapath, the restarted container carries on.
    let iperf = clients::start_iperf3_server(cluster.outside(), cluster.server_ip()).unwrap();
    let server = cluster.server_ip();
    let client_ns = w1.ns.clone();
    let upload = std::thread::spawn(move || {
        let out =
            client_ns.output(&["iperf3", "-c", &server.to_string(), "-t", "6", "-i", "0.5", "-J"]).unwrap();
        serde_json::from_slice::<Value>(&out.stdout).expect("iperf3 -J output")
    });
    std::thread::sleep(Duration::from_secs(2));
    podman.run(&["kill".into(), "--signal".into(), "KILL".into(), podman.name("agent")]).unwrap();
    podman.run(&["start".into(), podman.name("agent")]).unwrap();
    let report = upload.join().unwrap();
    let intervals = clients::interval_bytes(&report);
    // A stall while the agent container is down shows as empty intervals:
    // without the keeper the program goes with the agent.
    assert!(
        report["error"].is_null() && intervals.len() >= 11 && intervals.iter().all(|b| *b > 0),
        "the upload stalled across the restart: bytes per 0.5 s {intervals:?}, error {}",
        report["error"]
    );
    podman
        .wait_for_line("agent", Duration::from_secs(30), |l| l.contains("flows_carried_over=true"))
        .unwrap();
    drop(iperf);

    // The sidecar probes its replica through the tunnel (its raw socket
    // needs the NET_RAW the manifest adds).
    let follow_log = podman.logs("follow-w1");
    assert!(follow_log.contains("steering: probing"), "the follow sidecar does not steer:\n{follow_log}");

    // Removing the label: the follow sidecar moves w1 back to the node, so
    // it leaves with its own address again.
    labels["w1"].set(&[("app", "demo")]).unwrap();
    egress_tests::util::wait_for(
        "w1 to egress directly",
        Duration::from_secs(20),
        Duration::from_millis(500),
        || Ok(clients::curl_echo(&w1.ns, cluster.server_ip(), CURL_TIMEOUT).ok().filter(|r| r.ip == w1.ip)),
    )
    .unwrap();
    assert!(podman.logs("follow-w1").contains("left: "), "{}", podman.logs("follow-w1"));
    drop(echo);
}

/// What `podman kube play` (4.3, Debian 12's) makes of the rendered gateway
/// Deployment, read back from the containers it creates: each setting the
/// manifest asks for, and whether podman applied it.
struct PlayReport {
    lines: Vec<(String, bool)>,
}

impl PlayReport {
    fn check(&mut self, what: String, applied: bool) {
        self.lines.push((what, applied));
    }

    /// Whether every line of `prefix` says applied (and there is one).
    fn applied(&self, prefix: &str) -> bool {
        let lines: Vec<_> = self.lines.iter().filter(|(w, _)| w.starts_with(prefix)).collect();
        !lines.is_empty() && lines.iter().all(|(_, a)| *a)
    }
}

/// The gateway Deployment and its ConfigMaps as one YAML stream (JSON is
/// YAML), with the stand-ins of the other test: the local image, and the
/// pods file on a hostPath instead of the API server.
fn playable_gateway(
    rendered: &Rendered,
    image: &str,
    pods_dir: &str,
    pods_file: &str,
    annotate: bool,
) -> String {
    let mut gw = rendered.gateway().expect("a gateway Deployment").clone();
    if annotate {
        // Podman 4.3 reads a pod's seccomp profile only from the old
        // annotations: the manifest's own profile, said that way.
        let profile = gw["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]["type"].clone();
        if profile == "Unconfined" {
            gw["spec"]["template"]["metadata"]["annotations"]["seccomp.security.alpha.kubernetes.io/pod"] =
                "unconfined".into();
        }
    }
    let spec = &mut gw["spec"]["template"]["spec"];
    if annotate {
        // Podman 4.3 runs every init container to its end before the
        // others start, so a native sidecar (restartPolicy Always) would
        // hold the pod forever: it becomes an ordinary container.
        let init = spec["initContainers"].as_array().cloned().unwrap_or_default();
        let (sidecars, init): (Vec<Value>, Vec<Value>) =
            init.into_iter().partition(|c| c["restartPolicy"] == "Always");
        spec["initContainers"] = init.into();
        for mut sidecar in sidecars {
            sidecar.as_object_mut().unwrap().remove("restartPolicy");
            spec["containers"].as_array_mut().unwrap().insert(0, sidecar);
        }
    }
    let original = rendered.gateway().unwrap();
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            if annotate {
                // Nor does podman 4.3 expand $(VAR) in args from the
                // container's environment, as the kubelet does.
                let name = c["name"].as_str().unwrap_or_default().to_string();
                c["args"] = expanded_args(rendered, original, container(original, &name)).into();
            }
            c["image"] = image.into();
            c["imagePullPolicy"] = "Never".into();
            // Podman 4.3 turns every containerPort into a port mapping,
            // which it refuses without its own bridge network; in a
            // cluster they only name the ports.
            if let Some(c) = c.as_object_mut() {
                c.remove("ports");
            }
            if c["name"] == "agent" {
                c["args"]
                    .as_array_mut()
                    .unwrap()
                    .push(format!("--pods-file=/etc/egress-pods/{pods_file}").into());
                c["volumeMounts"].as_array_mut().unwrap().push(
                    serde_json::json!({"name": "pods", "mountPath": "/etc/egress-pods", "readOnly": true}),
                );
            }
        }
    }
    spec["volumes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "pods", "hostPath": {"path": pods_dir, "type": "Directory"}}));
    let mut docs: Vec<String> = rendered.all("ConfigMap").map(|cm| cm.to_string()).collect();
    docs.push(gw.to_string());
    docs.join("\n---\n")
}

/// `podman kube play` of the rendered gateway Deployment itself: podman
/// reads the manifest, not our translation of it. Pods cannot join a named
/// namespace (`--network ns:` is refused for pods), so the pod is made
/// with no network, and the test cluster's gateway eth0 is moved into it
/// before its containers start. Prints what podman applies and what it
/// ignores; the run must then carry a worker's traffic.
#[test]
fn podman_kube_play_runs_the_gateway_deployment() {
    let Some(image) = image() else { return };
    let rendered = render_with("overlays/example", &["components/seccomp-unconfined"]).unwrap();
    let workers = render_with("examples/worker", &[]).unwrap();
    let (cluster, _echo, pods_file) = cluster_listing(&["w1"]).unwrap();
    let w1 = cluster.pod("w1").clone();
    let gateway = cluster.gateway().clone();
    let podman = Podman::new(cluster.prefix()).unwrap();

    let dir = TempDir::new("kube-play").unwrap();
    let yaml = dir.path().join("gateway.yaml");
    let pods_dir = pods_file.path().parent().unwrap().display().to_string();
    let pods_name = pods_file.path().file_name().unwrap().to_string_lossy().into_owned();
    std::fs::write(&yaml, playable_gateway(&rendered, &image, &pods_dir, &pods_name, false)).unwrap();
    let play = |args: &[&str]| {
        let mut all: Vec<String> = vec!["kube".into()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.push(yaml.display().to_string());
        podman.run(&all)
    };
    let _ = play(&["down"]);
    play(&["play", "--start=false", "--network", "none"]).unwrap();
    struct Down<'a>(&'a dyn Fn(&[&str]) -> Result<String>);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down"]);
        }
    }
    let _down = Down(&play);

    let gw = rendered.gateway().unwrap();
    let pod_name = format!("{}-pod-0", gw["metadata"]["name"].as_str().unwrap());
    let inspect = |name: &str| -> Value {
        let text = podman.run(&["inspect".into(), format!("{pod_name}-{name}")]).unwrap();
        serde_json::from_str::<Value>(&text).unwrap()[0].clone()
    };
    let mut report = PlayReport { lines: Vec::new() };
    for name in ["state-keeper", "agent"] {
        let c = container(gw, name);
        let got = inspect(name);
        let host = &got["HostConfig"];
        let security = &c["securityContext"];
        let caps = |v: &Value| {
            egress_tests::kustomize::strings(v).iter().map(|c| format!("CAP_{c}")).collect::<Vec<_>>()
        };
        let effective: Vec<String> = egress_tests::kustomize::strings(&got["EffectiveCaps"]);
        let mut wanted = caps(&security["capabilities"]["add"]);
        wanted.sort();
        let mut effective_sorted = effective.clone();
        effective_sorted.sort();
        report.check(format!("{name}: capabilities exactly {wanted:?}"), effective_sorted == wanted);
        report.check(
            format!("{name}: readOnlyRootFilesystem"),
            host["ReadonlyRootfs"].as_bool() == security["readOnlyRootFilesystem"].as_bool(),
        );
        let opts = egress_tests::kustomize::strings(&host["SecurityOpt"]);
        report.check(
            format!("{name}: allowPrivilegeEscalation {}", security["allowPrivilegeEscalation"]),
            opts.iter().any(|o| o.starts_with("no-new-privileges"))
                == (security["allowPrivilegeEscalation"] == false),
        );
        let user = security["runAsUser"].as_u64().map(|u| u.to_string());
        report.check(
            format!("{name}: runAsUser {}", security["runAsUser"]),
            user.is_some()
                && got["Config"]["User"].as_str().unwrap_or_default().split(':').next() == user.as_deref(),
        );
        report.check(
            format!("{name}: seccompProfile Unconfined (pod level)"),
            opts.iter().any(|o| o == "seccomp=unconfined"),
        );
        let mounts = got["Mounts"].as_array().cloned().unwrap_or_default();
        let keeper = mounts.iter().find(|m| m["Destination"] == "/run/egress-gateway");
        report.check(
            format!("{name}: emptyDir medium Memory at /run/egress-gateway"),
            keeper.is_some_and(|m| {
                m["Type"] == "tmpfs" || m["Source"].as_str().is_some_and(|s| s.starts_with("/dev/shm"))
            }),
        );
    }
    let agent = inspect("agent");
    let command = egress_tests::kustomize::strings(&agent["Config"]["Cmd"]);
    report.check(
        "agent: $(VAR) in args expanded from envFrom".into(),
        !command.is_empty() && !command.iter().any(|a| a.contains("$(")),
    );
    report.check(
        "pod: sysctl net.ipv4.ip_local_port_range".into(),
        agent["HostConfig"]["Sysctls"]["net.ipv4.ip_local_port_range"].is_string(),
    );
    println!("podman kube play (podman {}):", podman.run(&["--version".into()]).unwrap().trim());
    for (what, applied) in &report.lines {
        println!("  {} {what}", if *applied { "applied:" } else { "IGNORED:" });
    }
    // What podman applies must be exactly what the manifest says.
    for must in [
        "state-keeper: capabilities",
        "agent: capabilities",
        "agent: readOnly",
        "agent: allowPrivilege",
        "agent: runAsUser",
    ] {
        assert!(report.applied(must), "podman kube play did not apply {must}");
    }

    // Stand-ins for what podman 4.3 ignores, so the pod can run: the
    // profile by its annotation, the sysctl set on the namespace. Then the
    // gateway's eth0 moves into the pod's namespace.
    play(&["down"]).unwrap();
    std::fs::write(&yaml, playable_gateway(&rendered, &image, &pods_dir, &pods_name, true)).unwrap();
    play(&["play", "--start=false", "--network", "none"]).unwrap();
    let infra = podman
        .run(&[
            "pod".into(),
            "inspect".into(),
            "--format".into(),
            "{{.InfraContainerID}}".into(),
            pod_name.clone(),
        ])
        .unwrap();
    podman.run(&["start".into(), infra.trim().into()]).unwrap();
    let pid = podman
        .run(&["inspect".into(), "--format".into(), "{{.State.Pid}}".into(), infra.trim().into()])
        .unwrap();
    let kube_ns = format!("{}-kube", cluster.prefix());
    run(&["ip", "netns", "attach", &kube_ns, pid.trim()]);
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["netns", "delete", &self.0]).status();
        }
    }
    let _detach = Detach(kube_ns.clone());
    let node = cluster.node(gateway.node);
    let prefix_len = node.pod_cidr.prefix_len;
    gateway.ns.ip(&["link", "set", "eth0", "netns", &kube_ns]).unwrap();
    let setup = format!(
        "set -e; ip link set eth0 up; ip addr add {}/{prefix_len} dev eth0; ip route add default via {} dev eth0; echo '{}' > /proc/sys/net/ipv4/ip_local_port_range",
        gateway.ip,
        node.bridge_ip,
        pod_security_sysctl(gw),
    );
    run(&["ip", "netns", "exec", &kube_ns, "sh", "-c", &setup]);
    let ready = podman.run(&["pod".into(), "start".into(), pod_name.clone()]);
    assert!(ready.is_ok(), "the pod did not start: {ready:?}");
    let agent_name = format!("{pod_name}-agent");
    egress_tests::util::wait_for(
        "the played agent's ready line",
        Duration::from_secs(30),
        Duration::from_millis(300),
        || {
            let out = podman.output(&["logs".into(), agent_name.clone()])?;
            let logs =
                format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            if logs.lines().any(is_ready_line) {
                return Ok(Some(()));
            }
            let state = podman.run(&[
                "inspect".into(),
                "--format".into(),
                "{{.State.Running}}".into(),
                agent_name.clone(),
            ])?;
            anyhow::ensure!(state.trim() == "true", "the played agent stopped:\n{logs}");
            Ok(None)
        },
    )
    .unwrap();
    let _labels = join_workers(&podman, &image, &workers, &cluster, &[&w1]).unwrap();
    let reply = clients::curl_echo(&w1.ns, cluster.server_ip(), CURL_TIMEOUT).unwrap();
    assert_eq!(reply.ip, gateway.ip, "w1 did not egress with the played gateway's address");
}

fn pod_security_sysctl(gw: &Value) -> String {
    egress_tests::kustomize::pod_spec(gw)["securityContext"]["sysctls"][0]["value"]
        .as_str()
        .unwrap()
        .to_string()
}

fn run(args: &[&str]) {
    let out = std::process::Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}
