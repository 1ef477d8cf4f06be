//! A stand-in for the Kubernetes API server, for testing the pod watcher
//! with the real, unmodified kube client over real HTTP.
//!
//! It speaks the list/watch protocol for pods (cluster-wide and namespaced)
//! and namespaces: lists carry a collection `resourceVersion`; watches
//! replay every change after the requested version, then stream new ones,
//! with label-selector transitions turned into ADDED/DELETED as the real
//! server does; `BOOKMARK`s when asked for; `timeoutSeconds` honoured.
//! Faults are injected on purpose: watches dropped mid-stream (the TCP
//! stream aborted), history compacted so that resuming gets `410 Gone`,
//! and a full outage (503 for every request).
//!
//! Only what the watcher needs is implemented: equality-based selectors
//! (`k=v`, `k!=v`, `k`, `!k`), no pagination (every list is one page).
use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use axum::{
    body::Body,
    extract::{Path as UrlPath, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use futures::channel::mpsc;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// Namespaces and pods as the server holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Namespace,
    Pod,
}

/// One change, kept so that a watch can resume from any version after the
/// compaction point.
#[derive(Clone)]
struct Change {
    resource_version: u64,
    kind: Kind,
    before: Option<Value>,
    after: Option<Value>,
}

/// What open watches are told.
#[derive(Clone, Debug)]
enum Signal {
    /// New changes are in the history.
    Changed,
    /// Abort the TCP stream without a proper end.
    Drop,
    /// Send `410 Gone` and end, as when the server's cache moved on.
    Gone,
}

struct Store {
    resource_version: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    history: Vec<Change>,
    /// Watches from versions older than this get 410 Gone.
    compacted_at: u64,
    outage: bool,
    /// Answer an expired watch with an HTTP 410 status instead of a 200
    /// carrying a 410 ERROR event (API servers do both).
    gone_as_status: bool,
    next_uid: u64,
    /// `METHOD path?query` of every request, in order.
    requests: Vec<String>,
}

struct Shared {
    store: Mutex<Store>,
    signals: broadcast::Sender<Signal>,
    /// Watches currently streaming (subscribed to `signals`).
    open_watches: std::sync::atomic::AtomicUsize,
}

/// Counts a watch as open for as long as it lives.
struct OpenWatch(Arc<Shared>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A pod as the tests describe it.
#[derive(Clone, Debug)]
pub struct FakePod {
    pub namespace: String,
    pub name: String,
    pub ip: Option<Ipv4Addr>,
    pub labels: Vec<(String, String)>,
    /// `Pending`, `Running`, `Succeeded`, `Failed`.
    pub phase: String,
    pub host_network: bool,
}

impl FakePod {
    /// A running pod in `namespace` with `ip`, labeled `egress=external`.
    pub fn labeled(namespace: &str, name: &str, ip: Ipv4Addr) -> FakePod {
        FakePod {
            namespace: namespace.into(),
            name: name.into(),
            ip: Some(ip),
            labels: vec![("egress".into(), "external".into())],
            phase: "Running".into(),
            host_network: false,
        }
    }

    /// The same pod without any label.
    pub fn unlabeled(mut self) -> FakePod {
        self.labels.clear();
        self
    }
}

/// The running server. It lives on its own thread and runtime, so it keeps
/// answering while a test blocks.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl FakeApiServer {
    /// Listens on 127.0.0.1 (an ephemeral port) of the calling thread's
    /// network namespace.
    pub fn start() -> Result<FakeApiServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the fake API server")?;
        FakeApiServer::start_on(listener)
    }

    /// Serves on `listener`, which may have been bound inside another
    /// network namespace (see [`crate::Netns::run`]).
    pub fn start_on(listener: std::net::TcpListener) -> Result<FakeApiServer> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (signals, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store {
                resource_version: 100,
                objects: BTreeMap::new(),
                history: Vec::new(),
                compacted_at: 0,
                outage: false,
                gone_as_status: false,
                next_uid: 1,
                requests: Vec::new(),
            }),
            signals,
            open_watches: Default::default(),
        });
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/api/v1/pods", get(list_or_watch_pods))
            .route("/api/v1/namespaces", get(list_or_watch_namespaces))
            .route("/api/v1/namespaces/{namespace}/pods", get(list_or_watch_namespaced_pods))
            .fallback(not_found)
            .with_state(shared.clone());
        std::thread::Builder::new().name("fake-apiserver".into()).spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let server = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                let _ = server.await;
            });
        })?;
        Ok(FakeApiServer { shared, addr, _shutdown: shutdown })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig that points a client at this server over plain
    /// HTTP, with no credentials.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Creates or replaces a pod (keeping its UID and creation time when it
    /// exists).
    pub fn apply_pod(&self, pod: &FakePod) {
        let key = (Kind::Pod, pod.namespace.clone(), pod.name.clone());
        self.change(key, |store, before| {
            let (uid, created) = match before {
                Some(old) => (old["metadata"]["uid"].clone(), old["metadata"]["creationTimestamp"].clone()),
                None => {
                    store.next_uid += 1;
                    (
                        json!(format!("00000000-0000-4000-8000-{:012}", store.next_uid)),
                        json!(timestamp(store.next_uid)),
                    )
                }
            };
            let labels: serde_json::Map<String, Value> =
                pod.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            let mut status = json!({ "phase": pod.phase });
            if let Some(ip) = pod.ip {
                status["podIP"] = json!(ip.to_string());
                status["podIPs"] = json!([{ "ip": ip.to_string() }]);
            }
            Some(json!({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod.name, "namespace": pod.namespace, "uid": uid,
                    "creationTimestamp": created, "labels": labels,
                },
                "spec": {
                    "containers": [{ "name": "app", "image": "registry.invalid/app:1" }],
                    "hostNetwork": pod.host_network,
                },
                "status": status,
            }))
        });
    }

    /// Deletes a pod (a no-op when it does not exist).
    pub fn delete_pod(&self, namespace: &str, name: &str) {
        self.change((Kind::Pod, namespace.into(), name.into()), |_, _| None);
    }

    /// Creates or relabels a namespace.
    pub fn apply_namespace(&self, name: &str, labels: &[(&str, &str)]) {
        self.change((Kind::Namespace, String::new(), name.into()), |store, before| {
            let uid = before.map(|o| o["metadata"]["uid"].clone()).unwrap_or_else(|| {
                store.next_uid += 1;
                json!(format!("00000000-0000-4000-9000-{:012}", store.next_uid))
            });
            let labels: serde_json::Map<String, Value> =
                labels.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
            Some(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": { "name": name, "uid": uid, "labels": labels },
            }))
        });
    }

    /// Aborts every open watch connection mid-stream.
    pub fn drop_watches(&self) {
        let _ = self.shared.signals.send(Signal::Drop);
    }

    /// Forgets the history: a watch resuming from any version seen so far
    /// gets `410 Gone`, and open watches are sent 410 and closed, so every
    /// client must list again.
    pub fn expire_history(&self) {
        let as_status = {
            let mut store = self.lock();
            store.compacted_at = store.resource_version + 1;
            store.history.clear();
            store.gone_as_status
        };
        // With 410 as a status, open watches just end; the resumed one gets it.
        let _ = self.shared.signals.send(if as_status { Signal::Drop } else { Signal::Gone });
    }

    /// From now on, say `410 Gone` as an HTTP status rather than as a watch
    /// ERROR event.
    pub fn set_gone_as_status(&self, on: bool) {
        self.lock().gone_as_status = on;
    }

    /// While on, every request fails with 503 and open watches are dropped.
    pub fn set_outage(&self, on: bool) {
        self.lock().outage = on;
        if on {
            self.drop_watches();
        }
    }

    /// How many watch streams are open now.
    pub fn open_watches(&self) -> usize {
        self.shared.open_watches.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// `GET path?query` of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.shared.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the object at `key` with what `build` returns (`None`
    /// deletes it), records the change and wakes the watches.
    fn change(
        &self,
        key: (Kind, String, String),
        build: impl FnOnce(&mut Store, Option<&Value>) -> Option<Value>,
    ) {
        {
            let mut store = self.lock();
            let before = store.objects.get(&key).cloned();
            let Some(mut after) = build(&mut store, before.as_ref()) else {
                let Some(mut before) = before else { return };
                store.resource_version += 1;
                let rv = store.resource_version;
                store.objects.remove(&key);
                // A deletion is reported with the object's final state at a new version.
                before["metadata"]["resourceVersion"] = json!(rv.to_string());
                store.history.push(Change {
                    resource_version: rv,
                    kind: key.0,
                    before: Some(before),
                    after: None,
                });
                drop(store);
                let _ = self.shared.signals.send(Signal::Changed);
                return;
            };
            store.resource_version += 1;
            let rv = store.resource_version;
            after["metadata"]["resourceVersion"] = json!(rv.to_string());
            store.objects.insert(key.clone(), after.clone());
            store.history.push(Change { resource_version: rv, kind: key.0, before, after: Some(after) });
        }
        let _ = self.shared.signals.send(Signal::Changed);
    }
}

fn timestamp(seq: u64) -> String {
    // Distinct, increasing creation times.
    format!("2026-01-01T00:{:02}:{:02}Z", (seq / 60) % 60, seq % 60)
}

/// The query parameters of list and watch requests that matter here.
#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    watch: Option<String>,
    label_selector: Option<String>,
    resource_version: Option<String>,
    timeout_seconds: Option<u64>,
    allow_watch_bookmarks: Option<bool>,
}

async fn list_or_watch_pods(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListParams>,
    uri: axum::http::Uri,
) -> Response {
    serve(shared, Kind::Pod, None, q, uri).await
}

async fn list_or_watch_namespaced_pods(
    State(shared): State<Arc<Shared>>,
    UrlPath(namespace): UrlPath<String>,
    Query(q): Query<ListParams>,
    uri: axum::http::Uri,
) -> Response {
    serve(shared, Kind::Pod, Some(namespace), q, uri).await
}

async fn list_or_watch_namespaces(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<ListParams>,
    uri: axum::http::Uri,
) -> Response {
    serve(shared, Kind::Namespace, None, q, uri).await
}

async fn not_found(uri: axum::http::Uri) -> Response {
    status_response(StatusCode::NOT_FOUND, "NotFound", &format!("the server could not find {}", uri.path()))
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn status_response(code: StatusCode, reason: &str, message: &str) -> Response {
    (code, [("content-type", "application/json")], status_json(code.as_u16(), reason, message).to_string())
        .into_response()
}

async fn serve(
    shared: Arc<Shared>,
    kind: Kind,
    namespace: Option<String>,
    q: ListParams,
    uri: axum::http::Uri,
) -> Response {
    // Subscribed under the store lock, before the outage check: a signal
    // sent by `set_outage` or `expire_history` after this request got in
    // must reach its watch, or that watch would outlive the outage.
    let signals = {
        let mut store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
        store.requests.push(format!("GET {uri}"));
        if store.outage {
            return status_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the server is unavailable",
            );
        }
        shared.signals.subscribe()
    };
    let selector = match Selector::parse(q.label_selector.as_deref().unwrap_or("")) {
        Ok(s) => s,
        Err(msg) => return status_response(StatusCode::BAD_REQUEST, "BadRequest", &msg),
    };
    let scope = Scope { kind, namespace, selector };
    if matches!(q.watch.as_deref(), Some("true") | Some("1")) {
        watch(shared, signals, scope, q)
    } else {
        list(&shared, &scope)
    }
}

struct Scope {
    kind: Kind,
    namespace: Option<String>,
    selector: Selector,
}

impl Scope {
    fn includes(&self, kind: Kind, object: Option<&Value>) -> bool {
        let Some(object) = object else { return false };
        kind == self.kind
            && self.namespace.as_deref().is_none_or(|ns| object["metadata"]["namespace"] == ns)
            && self.selector.matches(&object["metadata"]["labels"])
    }
}

fn list(shared: &Shared, scope: &Scope) -> Response {
    let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
    let items: Vec<&Value> =
        store.objects.iter().filter(|((k, _, _), o)| scope.includes(*k, Some(o))).map(|(_, o)| o).collect();
    let kind = if scope.kind == Kind::Pod { "PodList" } else { "NamespaceList" };
    let body = json!({
        "apiVersion": "v1", "kind": kind,
        "metadata": { "resourceVersion": store.resource_version.to_string() },
        "items": items,
    });
    (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
}

/// The watch event a change is for this watch, if any: a selector
/// transition is an ADDED or DELETED, as the real server reports it.
fn event_for(scope: &Scope, change: &Change) -> Option<Value> {
    let was = scope.includes(change.kind, change.before.as_ref());
    let is = scope.includes(change.kind, change.after.as_ref());
    let (kind, object) = match (was, is) {
        (false, true) => ("ADDED", change.after.clone()?),
        (true, true) => ("MODIFIED", change.after.clone()?),
        (true, false) => ("DELETED", change.after.clone().or_else(|| change.before.clone())?),
        (false, false) => return None,
    };
    Some(json!({ "type": kind, "object": object }))
}

fn watch(
    shared: Arc<Shared>,
    mut signals: broadcast::Receiver<Signal>,
    scope: Scope,
    q: ListParams,
) -> Response {
    let (tx, rx) = mpsc::unbounded::<Result<String, std::io::Error>>();
    let from: u64 = q.resource_version.as_deref().and_then(|v| v.parse().ok()).unwrap_or(0);
    let timeout = Duration::from_secs(q.timeout_seconds.unwrap_or(1800));
    let bookmarks = q.allow_watch_bookmarks.unwrap_or(false);
    let line = |v: Value| Ok::<_, std::io::Error>(format!("{v}\n"));

    {
        let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
        if from != 0 && from < store.compacted_at {
            let message = format!("too old resource version: {from} ({})", store.compacted_at);
            if store.gone_as_status {
                return status_response(StatusCode::GONE, "Expired", &message);
            }
            let _ = tx.unbounded_send(line(
                json!({ "type": "ERROR", "object": status_json(410, "Expired", &message) }),
            ));
            drop(tx);
            return watch_response(rx);
        }
    }

    shared.open_watches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let open = OpenWatch(shared.clone());
    tokio::spawn(async move {
        let _open = open;
        let mut sent_up_to = from;
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut bookmark_timer = tokio::time::interval(Duration::from_millis(500));
        loop {
            // Everything after what this watch has sent, in order.
            let (events, newest) = {
                let store = shared.store.lock().unwrap_or_else(|p| p.into_inner());
                let events: Vec<Value> = store
                    .history
                    .iter()
                    .filter(|c| c.resource_version > sent_up_to)
                    .filter_map(|c| event_for(&scope, c))
                    .collect();
                (events, store.resource_version)
            };
            for event in events {
                if tx.unbounded_send(line(event)).is_err() {
                    return;
                }
            }
            sent_up_to = sent_up_to.max(newest);
            tokio::select! {
                signal = signals.recv() => match signal {
                    Ok(Signal::Changed) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Ok(Signal::Drop) | Err(broadcast::error::RecvError::Closed) => {
                        let _ = tx.unbounded_send(Err(std::io::Error::other("connection dropped by the test")));
                        return;
                    }
                    Ok(Signal::Gone) => {
                        let status = status_json(410, "Expired", "too old resource version");
                        let _ = tx.unbounded_send(line(json!({ "type": "ERROR", "object": status })));
                        return;
                    }
                },
                _ = bookmark_timer.tick(), if bookmarks => {
                    let kind = if scope.kind == Kind::Pod { "Pod" } else { "Namespace" };
                    let bookmark = json!({ "type": "BOOKMARK", "object": {
                        "kind": kind, "apiVersion": "v1",
                        "metadata": { "resourceVersion": sent_up_to.to_string() },
                    }});
                    if tx.unbounded_send(line(bookmark)).is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
            }
        }
    });
    watch_response(rx)
}

fn watch_response(rx: mpsc::UnboundedReceiver<Result<String, std::io::Error>>) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(rx))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Equality-based label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`.
struct Selector(Vec<(String, Option<String>, bool)>);

impl Selector {
    fn parse(text: &str) -> std::result::Result<Selector, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let parsed = if let Some(key) = term.strip_prefix('!') {
                (key.to_string(), None, false)
            } else if let Some((k, v)) = term.split_once("!=") {
                (k.trim().to_string(), Some(v.trim().to_string()), false)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k.trim().to_string(), Some(v.trim().to_string()), true)
            } else if term.contains(' ') || term.contains('(') {
                return Err(format!("unsupported selector term {term:?} in this test server"));
            } else {
                (term.to_string(), None, true)
            };
            terms.push(parsed);
        }
        Ok(Selector(terms))
    }

    fn matches(&self, labels: &Value) -> bool {
        self.0.iter().all(|(key, value, positive)| {
            let actual = labels.get(key).and_then(Value::as_str);
            match (value, positive) {
                (Some(v), true) => actual == Some(v.as_str()),
                (Some(v), false) => actual != Some(v.as_str()),
                (None, true) => actual.is_some(),
                (None, false) => actual.is_none(),
            }
        })
    }
}
