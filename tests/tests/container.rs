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
    scenario::PodsFile,
    topology::Cluster,
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

#[test]
fn the_image_runs_as_the_manifests_say() {
    let Some(image) = image() else { return };
    let gateway_default = render_with("overlays/example", &[]).unwrap();
    let gateway_unconfined = render_with("overlays/example", &["components/seccomp-unconfined"]).unwrap();
    let workers = render_with("examples/worker", &[]).unwrap();

    let cluster = Cluster::build_default().unwrap();
    let echo = clients::start_echo_server(
        cluster.outside(),
        &clients::echo_server_binary().unwrap(),
        cluster.server_ips(),
    )
    .unwrap();
    let pods_file = PodsFile::create().unwrap();
    let (w1, w2) = (cluster.pod("w1").clone(), cluster.pod("w2").clone());
    pods_file.write(&[(w1.ip, "w1")]).unwrap();
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

    // The workers: the join init container runs to its end, the follow
    // sidecar stays. Both find the Services by name.
    let deployment = worker_deployment(&workers);
    let join = container(deployment, "egress-join");
    let follow = container(deployment, "egress-follow");
    let join_args = expanded_args(&workers, deployment, join);
    let follow_args = expanded_args(&workers, deployment, follow);
    let hosts = [
        "--add-host".to_string(),
        format!("{}:{}", flag(&join_args, "--gateway"), cluster.service_vip()),
        "--add-host".to_string(),
        format!("{}:{}", flag(&follow_args, "--replicas"), gateway.ip),
    ];
    let (key, value) =
        flag(&join_args, "--selector").split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap();
    let mut labels = BTreeMap::new();
    for worker in [&w1, &w2] {
        let worker_labels = Labels::new(&[(&key, &value), ("app", "demo")]).unwrap();
        let worker_volumes = BTreeMap::from([("podinfo", worker_labels.dir.path().to_path_buf())]);
        let mut flags = kubelet_flags(deployment, join, worker.ns.name(), &worker_volumes).unwrap();
        flags.insert(0, "--rm".into());
        flags.extend(hosts.iter().cloned());
        let out = podman.start(&format!("join-{}", worker.name), &flags, &image, &join_args);
        assert!(out.is_ok(), "the join container failed in {}: {out:?}", worker.name);
        let mut flags = kubelet_flags(deployment, follow, worker.ns.name(), &worker_volumes).unwrap();
        flags.insert(0, "-d".into());
        flags.extend(hosts.iter().cloned());
        podman.start(&format!("follow-{}", worker.name), &flags, &image, &follow_args).unwrap();
        labels.insert(worker.name.clone(), worker_labels);
    }

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
    let upload = std::thread::spawn(move || clients::iperf3(&client_ns, server, 6, false));
    std::thread::sleep(Duration::from_secs(2));
    podman.run(&["kill".into(), "--signal".into(), "KILL".into(), podman.name("agent")]).unwrap();
    podman.run(&["start".into(), podman.name("agent")]).unwrap();
    let throughput = upload.join().unwrap().unwrap();
    assert!(throughput.bytes_received > 1_000_000, "the upload stalled across the restart: {throughput:?}");
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
    assert!(podman.logs("follow-w1").contains("left"), "{}", podman.logs("follow-w1"));
    drop(echo);
}
