//! The Kubernetes pod source against a fake API server that speaks the real
//! list/watch protocol over HTTP (egress-tests' `apiserver`), with the kube
//! client unmodified. Each test watches the snapshots the source publishes,
//! which is exactly what the gateway applies to its maps.
use std::{
    net::Ipv4Addr,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use egress_agent::pods::{
    kubernetes::{KubeSource, Selection},
    selector::LabelSelector,
    ClientSnapshot, PodSource, SourceHealth, SourceState,
};
use egress_tests::apiserver::{FakeApiServer, FakePod};
use tokio::sync::watch;

/// How soon a change must reach the published client list.
const PROMPT: Duration = Duration::from_secs(1);
/// Longer than the watcher's backoff cap (5 s) plus a relist.
const CATCH_UP: Duration = Duration::from_secs(10);

struct Watching {
    snapshots: watch::Receiver<Option<ClientSnapshot>>,
    health: Arc<SourceHealth>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempdir::Dir,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

mod tempdir {
    /// A private directory for the kubeconfig, removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            let path = std::env::temp_dir().join(format!(
                "egress-kube-{}-{}",
                std::process::id(),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn selection(namespaces: &[&str], namespace_selector: Option<&str>) -> Selection {
    Selection {
        pod_selector: LabelSelector::parse("egress=external").unwrap(),
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        namespace_selector: namespace_selector.map(|s| LabelSelector::parse(s).unwrap()),
    }
}

async fn watch_with(server: &FakeApiServer, selection: Selection) -> Watching {
    let dir = tempdir::Dir::new();
    let kubeconfig = dir.0.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let source = KubeSource::from_kubeconfig_file(&kubeconfig, selection).await.unwrap();
    let (tx, snapshots) = watch::channel(None);
    let health = Arc::new(SourceHealth::default());
    let task = tokio::spawn(Box::new(source).run(tx, health.clone()));
    Watching { snapshots, health, task, _dir: dir }
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 1, last)
}

/// The IPv4 clients' addresses (the pods here have no other).
fn addresses(snapshot: &ClientSnapshot) -> Vec<Ipv4Addr> {
    snapshot
        .keys()
        .map(|ip| match ip {
            std::net::IpAddr::V4(ip) => *ip,
            std::net::IpAddr::V6(ip) => panic!("{ip}: no pod here is listed by IPv6"),
        })
        .collect()
}

/// Waits until the published client addresses are exactly `expected`;
/// returns how long it took.
async fn expect_clients(w: &mut Watching, expected: &[Ipv4Addr], within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Some(snapshot) = w.snapshots.borrow_and_update().as_ref() {
            if addresses(snapshot) == expected {
                return start.elapsed();
            }
        }
        let left = within.saturating_sub(start.elapsed());
        if left.is_zero() || tokio::time::timeout(left, w.snapshots.changed()).await.is_err() {
            let now = w.snapshots.borrow().as_ref().map(addresses);
            panic!("expected clients {expected:?} within {within:?}; published: {now:?}");
        }
    }
}

#[tokio::test]
async fn initial_list_admits_only_labeled_running_pods_with_an_ip() {
    let server = FakeApiServer::start().unwrap();
    server.apply_pod(&FakePod::labeled("apps", "web", ip(1)));
    server.apply_pod(&FakePod::labeled("apps", "plain", ip(2)).unlabeled());
    server.apply_pod(&FakePod {
        host_network: true,
        ..FakePod::labeled("apps", "host", Ipv4Addr::new(192, 168, 0, 5))
    });
    server.apply_pod(&FakePod { phase: "Succeeded".into(), ..FakePod::labeled("apps", "job", ip(4)) });
    server.apply_pod(&FakePod { phase: "Failed".into(), ..FakePod::labeled("apps", "crashed", ip(6)) });
    server.apply_pod(&FakePod {
        ip: None,
        phase: "Pending".into(),
        ..FakePod::labeled("apps", "pending", ip(0))
    });
    server.apply_pod(&FakePod::labeled("other", "api", ip(5)));

    let mut w = watch_with(&server, selection(&[], None)).await;
    expect_clients(&mut w, &[ip(1), ip(5)], CATCH_UP).await;
    let snapshot = w.snapshots.borrow().clone().unwrap();
    assert_eq!(snapshot[&ip(1).into()].name, "apps/web");
    assert!(!snapshot[&ip(1).into()].uid.is_empty(), "the pod UID is part of the identity");
    assert!(w.health.synced.load(Ordering::Relaxed));
    assert_eq!(w.health.state(), SourceState::Watching);
    // The selector was sent to the server, not only applied here.
    assert!(
        server.requests().iter().any(|r| r.contains("labelSelector=egress%3Dexternal")),
        "{:?}",
        server.requests()
    );
}

#[tokio::test]
async fn label_added_removed_and_pod_deleted_reach_the_list_within_a_second() {
    let server = FakeApiServer::start().unwrap();
    server.apply_pod(&FakePod::labeled("apps", "web", ip(1)).unlabeled());
    let mut w = watch_with(&server, selection(&[], None)).await;
    expect_clients(&mut w, &[], CATCH_UP).await;

    server.apply_pod(&FakePod::labeled("apps", "web", ip(1)));
    expect_clients(&mut w, &[ip(1)], PROMPT).await;
    server.apply_pod(&FakePod::labeled("apps", "web", ip(1)).unlabeled());
    expect_clients(&mut w, &[], PROMPT).await;

    server.apply_pod(&FakePod::labeled("apps", "web", ip(1)));
    server.apply_pod(&FakePod::labeled("apps", "api", ip(2)));
    expect_clients(&mut w, &[ip(1), ip(2)], PROMPT).await;
    server.delete_pod("apps", "web");
    expect_clients(&mut w, &[ip(2)], PROMPT).await;
    // Finishing (a Job's pod) frees the IP for reuse: no longer a client.
    server.apply_pod(&FakePod { phase: "Succeeded".into(), ..FakePod::labeled("apps", "api", ip(2)) });
    expect_clients(&mut w, &[], PROMPT).await;
}

#[tokio::test]
async fn a_reused_ip_gets_the_new_pods_identity() {
    let server = FakeApiServer::start().unwrap();
    server.apply_pod(&FakePod::labeled("apps", "old", ip(7)));
    let mut w = watch_with(&server, selection(&[], None)).await;
    expect_clients(&mut w, &[ip(7)], CATCH_UP).await;
    let old_uid = w.snapshots.borrow().as_ref().unwrap()[&ip(7).into()].uid.clone();

    server.delete_pod("apps", "old");
    server.apply_pod(&FakePod::labeled("apps", "new", ip(7)));
    let start = Instant::now();
    loop {
        let current = w.snapshots.borrow_and_update().clone().unwrap();
        if current.get(&ip(7).into()).is_some_and(|c| c.name == "apps/new") {
            assert_ne!(current[&ip(7).into()].uid, old_uid);
            break;
        }
        assert!(start.elapsed() < PROMPT, "the new pod never took over the address: {current:?}");
        let _ = tokio::time::timeout(PROMPT, w.snapshots.changed()).await;
    }
}

#[tokio::test]
async fn a_dropped_watch_resumes_without_losing_events() {
    let server = FakeApiServer::start().unwrap();
    server.apply_pod(&FakePod::labeled("apps", "web", ip(1)));
    let mut w = watch_with(&server, selection(&[], None)).await;
    expect_clients(&mut w, &[ip(1)], CATCH_UP).await;
    let start = Instant::now();
    while server.open_watches() == 0 {
        assert!(start.elapsed() < CATCH_UP, "the watch never opened: {:?}", server.requests());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.drop_watches();
    // The watch is re-opened from where it was, with no full list (a relist
    // is the 410 path, tested below) ...
    let watches = || server.requests().iter().filter(|r| r.contains("watch=true")).count();
    let start = Instant::now();
    while watches() < 2 {
        assert!(start.elapsed() < CATCH_UP, "no new watch after the drop: {:?}", server.requests());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let resumed = server.requests().into_iter().rfind(|r| r.contains("watch=true")).unwrap();
    assert!(resumed.contains("resourceVersion=101"), "resumed from the last version seen: {resumed}");
    assert_eq!(w.health.relists.load(Ordering::Relaxed), 1);
    // ... and delivers what happens next.
    server.apply_pod(&FakePod::labeled("apps", "api", ip(2)));
    server.delete_pod("apps", "web");
    expect_clients(&mut w, &[ip(2)], PROMPT).await;
}

#[tokio::test]
async fn gone_410_relists_and_removes_what_vanished_meanwhile() {
    let server = FakeApiServer::start().unwrap();
    server.apply_pod(&FakePod::labeled("apps", "web", ip(1)));
    server.apply_pod(&FakePod::labeled("apps", "api", ip(2)));
    let mut w = watch_with(&server, selection(&[], None)).await;
    expect_clients(&mut w, &[ip(1), ip(2)], CATCH_UP).await;

    // The watch is down while the cluster changes and the history that
    // would have told us is compacted away.
    server.set_outage(true);
    server.delete_pod("apps", "web");
    server.apply_pod(&FakePod::labeled("apps", "batch", ip(3)));
    server.expire_history();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.set_outage(false);

    expect_clients(&mut w, &[ip(2), ip(3)], CATCH_UP).await;
    assert!(w.health.relists.load(Ordering::Relaxed) >= 2, "410 must lead to a full list");
}

#[tokio::test]
async fn gone_410_as_an_http_status_relists_too() {
    let server = FakeApiServer::start().unwrap();
    server.set_gone_as_status(true);
    server.apply_pod(&FakePod::labeled("apps", "web", ip(1)));
    let mut w = watch_with(&server, selection(&[], None)).await;
    expect_clients(&mut w, &[ip(1)], CATCH_UP).await;

    server.set_outage(true);
    server.delete_pod("apps", "web");
    server.apply_pod(&FakePod::labeled("apps", "api", ip(2)));
    server.expire_history();
    server.set_outage(false);

    expect_clients(&mut w, &[ip(2)], CATCH_UP).await;
    assert!(w.health.relists.load(Ordering::Relaxed) >= 2, "a 410 status must lead to a full list");
}

#[tokio::test]
async fn an_outage_keeps_the_list_and_catches_up_afterwards() {
    let server = FakeApiServer::start().unwrap();
    server.apply_pod(&FakePod::labeled("apps", "web", ip(1)));
    let mut w = watch_with(&server, selection(&[], None)).await;
    expect_clients(&mut w, &[ip(1)], CATCH_UP).await;

    server.set_outage(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Nothing was flushed or replaced while the API was down.
    assert_eq!(w.snapshots.borrow().as_ref().map(addresses), Some(vec![ip(1)]));
    assert_eq!(
        w.health.state(),
        SourceState::Retrying,
        "{:?} errors {}",
        server.requests(),
        w.health.errors.load(Ordering::Relaxed)
    );
    let errors = w.health.errors.load(Ordering::Relaxed);
    assert!(errors >= 2, "retries during the outage: {errors}");

    server.apply_pod(&FakePod::labeled("apps", "api", ip(2)));
    server.set_outage(false);
    expect_clients(&mut w, &[ip(1), ip(2)], CATCH_UP).await;
    assert_eq!(w.health.state(), SourceState::Watching);
}

#[tokio::test]
async fn nothing_is_published_before_the_first_full_list() {
    let server = FakeApiServer::start().unwrap();
    server.set_outage(true);
    server.apply_pod(&FakePod::labeled("apps", "web", ip(1)));
    let mut w = watch_with(&server, selection(&[], None)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(w.snapshots.borrow().is_none(), "published a list the source could not know");
    assert!(!w.health.synced.load(Ordering::Relaxed));
    server.set_outage(false);
    expect_clients(&mut w, &[ip(1)], CATCH_UP).await;
}

#[tokio::test]
async fn namespaces_restrict_the_clients() {
    let server = FakeApiServer::start().unwrap();
    server.apply_pod(&FakePod::labeled("apps", "web", ip(1)));
    server.apply_pod(&FakePod::labeled("batch", "job", ip(2)));
    server.apply_pod(&FakePod::labeled("kube-system", "dns", ip(3)));
    let mut w = watch_with(&server, selection(&["apps", "batch"], None)).await;
    expect_clients(&mut w, &[ip(1), ip(2)], CATCH_UP).await;
    server.apply_pod(&FakePod::labeled("kube-system", "dns2", ip(4)));
    server.apply_pod(&FakePod::labeled("batch", "job2", ip(5)));
    expect_clients(&mut w, &[ip(1), ip(2), ip(5)], PROMPT).await;
    assert!(server.requests().iter().all(|r| !r.starts_with("GET /api/v1/pods")), "only namespaced requests");
}

#[tokio::test]
async fn a_namespace_selector_follows_namespace_labels() {
    let server = FakeApiServer::start().unwrap();
    server.apply_namespace("apps", &[("egress-gateway/allowed", "true")]);
    server.apply_namespace("batch", &[]);
    server.apply_pod(&FakePod::labeled("apps", "web", ip(1)));
    server.apply_pod(&FakePod::labeled("batch", "job", ip(2)));
    let mut w = watch_with(&server, selection(&[], Some("egress-gateway/allowed=true"))).await;
    expect_clients(&mut w, &[ip(1)], CATCH_UP).await;

    server.apply_namespace("batch", &[("egress-gateway/allowed", "true")]);
    expect_clients(&mut w, &[ip(1), ip(2)], PROMPT).await;
    server.apply_namespace("apps", &[]);
    expect_clients(&mut w, &[ip(2)], PROMPT).await;
}
