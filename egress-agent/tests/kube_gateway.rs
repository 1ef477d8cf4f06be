//! The shipped binary as it runs in a cluster: no --pods-file, clients from
//! the Kubernetes API (a fake list/watch server reached through KUBECONFIG
//! over plain http://), real traffic from joined worker pods, and the health,
//! metrics and status endpoints.
use std::{net::Ipv4Addr, path::Path, time::Duration};

use egress_tests::{
    agent::{self, agent_binary, JoinArgs},
    apiserver::{FakeApiServer, FakePod},
    clients, require_root,
    topology::POD_IFACE,
    util::{wait_for, TempDir},
    Cluster, ClusterConfig, Daemon, Netns,
};

const CURL_TIMEOUT: Duration = Duration::from_secs(3);

struct KubeCluster {
    // Field order is drop order: the agent before the cluster it runs in.
    agent: Daemon,
    api: FakeApiServer,
    _echo: Daemon,
    _dir: TempDir,
    cluster: Cluster,
}

impl KubeCluster {
    /// The default namespace cluster with the fake API server listening in
    /// the gateway pod's namespace, w1 labeled and w2 not; w1 and w2 joined.
    fn start(outage_at_start: bool) -> KubeCluster {
        require_root().unwrap_or_else(|e| panic!("{e:#}"));
        let bin = agent_binary().unwrap_or_else(|e| panic!("{e:#}"));
        let echo_bin = clients::echo_server_binary().unwrap();
        let cluster = Cluster::build(ClusterConfig::default()).unwrap();
        let echo = clients::start_echo_server(cluster.outside(), &echo_bin, cluster.server_ips()).unwrap();

        let listener = cluster.gateway().ns.run(|| Ok(std::net::TcpListener::bind("127.0.0.1:0")?)).unwrap();
        let api = FakeApiServer::start_on(listener).unwrap();
        api.set_outage(outage_at_start);
        api.apply_pod(&FakePod::labeled("apps", "w1", cluster.pod("w1").ip));
        api.apply_pod(&FakePod::labeled("apps", "w2", cluster.pod("w2").ip).unlabeled());
        let dir = TempDir::new("kube-gateway").unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();

        let agent = start_gateway(&cluster.gateway().ns, &bin, &kubeconfig);
        let join = JoinArgs {
            gateway: cluster.service_vip().to_string(),
            cluster_cidrs: cluster.cluster_cidrs().iter().map(ToString::to_string).collect(),
            vni: None,
            vxlan_port: None,
        };
        for pod in ["w1", "w2"] {
            agent::join(&cluster.pod(pod).ns, &bin, &join).unwrap();
        }
        KubeCluster { agent, api, _echo: echo, _dir: dir, cluster }
    }

    fn ip(&self, pod: &str) -> Ipv4Addr {
        self.cluster.pod(pod).ip
    }

    fn curl_from(&self, pod: &str) -> anyhow::Result<clients::EchoReply> {
        clients::curl_echo(&self.cluster.pod(pod).ns, self.cluster.server_ip(), CURL_TIMEOUT)
    }

    /// GET on the agent's HTTP port, from inside the gateway pod.
    fn http(&self, path: &str) -> (u16, String) {
        let out = self
            .cluster
            .gateway()
            .ns
            .output(&["curl", "-s", "-w", "\n%{http_code}", &format!("http://127.0.0.1:9090{path}")])
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    fn metric(&self, line_prefix: &str) -> Option<f64> {
        let (_, body) = self.http("/metrics");
        body.lines().find(|l| l.starts_with(line_prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    fn clients(&self) -> Vec<Ipv4Addr> {
        let status =
            agent::status_json_in(self.cluster.gateway().ns.name(), &agent_binary().unwrap()).unwrap();
        status["clients"].as_array().unwrap().iter().map(|ip| ip.as_str().unwrap().parse().unwrap()).collect()
    }

    fn wait_clients(&self, expected: &[Ipv4Addr]) {
        wait_for("the gateway's client list", Duration::from_secs(10), Duration::from_millis(100), || {
            Ok((self.clients() == expected).then_some(()))
        })
        .unwrap_or_else(|e| {
            panic!("{e:#}: have {:?}, want {expected:?}\n{}", self.clients(), self.agent.log())
        });
    }
}

fn start_gateway(ns: &Netns, bin: &Path, kubeconfig: &Path) -> Daemon {
    // KUBECONFIG is how a user points the agent at a cluster from outside it.
    let kubeconfig = format!("KUBECONFIG={}", kubeconfig.display());
    let args = [
        "env",
        &kubeconfig,
        bin.to_str().unwrap(),
        "gateway",
        "--interface",
        POD_IFACE,
        "--gc-interval-s",
        "1",
    ];
    Daemon::spawn(ns, "egress-agent", &args).unwrap()
}

#[test]
fn labeled_pods_egress_through_the_gateway_and_label_changes_apply() {
    let mut k = KubeCluster::start(false);
    k.agent.wait_for_line("its ready line", agent::READY_TIMEOUT, agent::is_ready_line).unwrap();
    assert_eq!(k.http("/readyz").0, 200);
    assert_eq!(k.http("/healthz").0, 200);
    k.wait_clients(&[k.ip("w1")]);

    let gateway_ip = k.cluster.gateway().ip;
    assert_eq!(
        k.curl_from("w1").unwrap().ip,
        gateway_ip,
        "the labeled pod leaves with the gateway's address"
    );
    assert!(k.curl_from("w2").is_err(), "the unlabeled, joined pod is dropped at the gateway");

    // Labeling w2 lets it out; unlabeling w1 cuts it off.
    k.api.apply_pod(&FakePod::labeled("apps", "w2", k.ip("w2")));
    k.api.apply_pod(&FakePod::labeled("apps", "w1", k.ip("w1")).unlabeled());
    k.wait_clients(&[k.ip("w2")]);
    assert_eq!(k.curl_from("w2").unwrap().ip, gateway_ip);
    assert!(k.curl_from("w1").is_err(), "a pod that lost its label must not egress");

    // Metrics: the client, its traffic, the watch state.
    let w2 = k.ip("w2");
    let sent =
        format!("egress_client_packets_total{{client=\"{w2}\",pod=\"apps/w2\",direction=\"to_remote\"}}");
    let received =
        format!("egress_client_bytes_total{{client=\"{w2}\",pod=\"apps/w2\",direction=\"to_client\"}}");
    wait_for("per-client metrics", Duration::from_secs(5), Duration::from_millis(200), || {
        Ok((k.metric(&sent).unwrap_or(0.0) > 0.0 && k.metric(&received).unwrap_or(0.0) > 0.0).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", k.http("/metrics").1));
    assert_eq!(k.metric("egress_clients "), Some(1.0));
    assert_eq!(k.metric("egress_pod_watch_state{state=\"watching\"}"), Some(1.0));
    assert!(
        k.metric("egress_drops_total{reason=\"unknown_client\"}").unwrap_or(0.0) >= 1.0,
        "w1's dropped tries"
    );

    // An API outage keeps the list: w2 still gets out, w1 still does not.
    k.api.set_outage(true);
    wait_for("the watch state to say retrying", Duration::from_secs(10), Duration::from_millis(200), || {
        Ok((k.metric("egress_pod_watch_state{state=\"retrying\"}") == Some(1.0)).then_some(()))
    })
    .unwrap();
    assert_eq!(k.curl_from("w2").unwrap().ip, gateway_ip, "an outage must not flush the clients");
    assert!(k.curl_from("w1").is_err());
    assert_eq!(k.http("/readyz").0, 200, "ready stays ready: the datapath keeps working");

    // What changed during the outage is applied once the API is back.
    k.api.apply_pod(&FakePod::labeled("apps", "w1", k.ip("w1")));
    k.api.set_outage(false);
    k.wait_clients(&[k.ip("w1"), k.ip("w2")]);
    assert_eq!(k.curl_from("w1").unwrap().ip, gateway_ip);
}

#[test]
fn not_ready_until_the_first_list_then_a_deleted_pod_is_forgotten() {
    let mut k = KubeCluster::start(true);
    // Attached, but the API has not answered: live, not ready, nobody out.
    wait_for("the HTTP endpoints", Duration::from_secs(10), Duration::from_millis(100), || {
        Ok((k.http("/healthz").0 == 200).then_some(()))
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", k.agent.log()));
    let (code, why) = k.http("/readyz");
    assert_eq!(code, 503);
    assert!(why.contains("first full pod list"), "{why}");
    assert!(k.curl_from("w1").is_err(), "no clients before the first list");

    k.api.set_outage(false);
    k.agent.wait_for_line("its ready line", agent::READY_TIMEOUT, agent::is_ready_line).unwrap();
    assert_eq!(k.http("/readyz").0, 200);
    assert_eq!(k.curl_from("w1").unwrap().ip, k.cluster.gateway().ip);

    k.api.delete_pod("apps", "w1");
    k.wait_clients(&[]);
    assert!(k.curl_from("w1").is_err(), "a deleted pod's IP is no longer a client");
}
