//! The Kubernetes pod source: kube-runtime watchers on labeled pods (and,
//! with a namespace selector, on namespaces), folded by [`index::PodIndex`]
//! into complete snapshots of the clients.
//!
//! Outage rules (DESIGN.md): nothing is published until every watcher has
//! completed a full list; an API error keeps the current allow-list and
//! retries with a backoff capped at 5 s; a relist (after 410 Gone or a dropped watch) removes
//! what vanished meanwhile. The watcher re-lists by itself on 410.
mod backoff;
pub mod index;

use std::{
    pin::Pin,
    sync::{atomic::Ordering, Arc},
};

use anyhow::{Context, Result};
use futures::{future::FutureExt, stream::BoxStream, Future, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    runtime::{watcher, WatchStreamExt},
    Api, Client,
};

use self::{backoff::WatchBackoff, index::PodIndex};
use super::{selector::LabelSelector, unix_now_s, ClientSnapshot, PodSource, SourceHealth, SourceState};

/// How long a watch request may stay open. Short enough that a connection
/// that died silently (no FIN, no RST) is noticed within about a minute;
/// kube-runtime adds 5 s of grace before it gives up on a quiet stream.
const WATCH_TIMEOUT_S: u32 = 55;

/// Which pods are clients.
#[derive(Clone, Debug)]
pub struct Selection {
    pub pod_selector: LabelSelector,
    /// Only these namespaces (one watcher each); all when empty.
    pub namespaces: Vec<String>,
    /// Only namespaces whose labels match.
    pub namespace_selector: Option<LabelSelector>,
}

pub struct KubeSource {
    client: Client,
    selection: Selection,
    server: String,
}

impl KubeSource {
    /// Finds the API server: KUBECONFIG (or ~/.kube/config), else the
    /// in-cluster service account. Nothing is requested yet: an API server
    /// that is down at start delays readiness, it does not fail the gateway.
    pub async fn connect(selection: Selection) -> Result<KubeSource> {
        let config = kube::Config::infer().await.context(
            "no Kubernetes API configuration (not in a cluster, no usable KUBECONFIG): run in a pod with a service account, set KUBECONFIG, or pass --pods-file",
        )?;
        KubeSource::with_config(config, selection)
    }

    /// Uses the kubeconfig file at `path` (its current context).
    pub async fn from_kubeconfig_file(path: &std::path::Path, selection: Selection) -> Result<KubeSource> {
        let kubeconfig = kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .with_context(|| format!("kubeconfig {}", path.display()))?;
        KubeSource::with_config(config, selection)
    }

    fn with_config(mut config: kube::Config, selection: Selection) -> Result<KubeSource> {
        // One retry policy, the watcher's: the client's own silent retries
        // of 503s would hide an outage from the health state and metrics.
        config.default_retry = false;
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).context("creating the Kubernetes client")?;
        Ok(KubeSource { client, selection, server })
    }
}

/// One event from any of the watchers (boxed: a Pod or a watcher error is
/// kilobytes, and the stream moves every update).
enum Update {
    Pods(usize, Box<Result<watcher::Event<Pod>, watcher::Error>>),
    Namespaces(Box<Result<watcher::Event<Namespace>, watcher::Error>>),
}

impl PodSource for KubeSource {
    fn describe(&self) -> String {
        let Selection { pod_selector, namespaces, namespace_selector } = &self.selection;
        let mut text = format!(
            "kubernetes {} pods {pod_selector:?}",
            self.server,
            pod_selector = pod_selector.to_string()
        );
        if !namespaces.is_empty() {
            text += &format!(" in namespaces {}", namespaces.join(","));
        }
        if let Some(ns) = namespace_selector {
            text += &format!(" in namespaces matching {:?}", ns.to_string());
        }
        text
    }

    fn run(
        self: Box<Self>,
        updates: tokio::sync::watch::Sender<Option<ClientSnapshot>>,
        health: Arc<SourceHealth>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let Selection { pod_selector, namespaces, namespace_selector } = self.selection;
            let pod_config =
                watcher::Config::default().labels(&pod_selector.to_string()).timeout(WATCH_TIMEOUT_S);
            let pod_apis: Vec<Api<Pod>> = if namespaces.is_empty() {
                vec![Api::all(self.client.clone())]
            } else {
                namespaces.iter().map(|ns| Api::namespaced(self.client.clone(), ns)).collect()
            };
            let mut streams: Vec<BoxStream<'static, Update>> = pod_apis
                .into_iter()
                .enumerate()
                .map(|(i, api)| {
                    relisting_watcher(api, pod_config.clone())
                        .map(move |ev| Update::Pods(i, Box::new(ev)))
                        .boxed()
                })
                .collect();
            if let Some(selector) = &namespace_selector {
                let config =
                    watcher::Config::default().labels(&selector.to_string()).timeout(WATCH_TIMEOUT_S);
                let api: Api<Namespace> = Api::all(self.client.clone());
                streams
                    .push(relisting_watcher(api, config).map(|ev| Update::Namespaces(Box::new(ev))).boxed());
            }
            let mut index = PodIndex::new(
                streams.len() - namespace_selector.is_some() as usize,
                pod_selector,
                namespace_selector,
            );
            let mut events = futures::stream::select_all(streams);
            let mut last_error: Option<String> = None;

            while let Some(update) = events.next().await {
                let mut changed = apply(&mut index, update, &health, &mut last_error);
                // Take everything already waiting before publishing: a relist
                // of many pods becomes one snapshot, not one per pod.
                while let Some(Some(update)) = events.next().now_or_never() {
                    changed |= apply(&mut index, update, &health, &mut last_error);
                }
                if updates.is_closed() {
                    return;
                }
                if !index.synced() {
                    continue;
                }
                let first = !health.synced.swap(true, Ordering::Relaxed);
                if first || changed {
                    let snapshot = index.snapshot();
                    if first {
                        tracing::info!(clients = snapshot.len(), "pod list synced");
                    }
                    updates.send_if_modified(|current| {
                        let modified = current.as_ref() != Some(&snapshot);
                        *current = Some(snapshot);
                        modified || first
                    });
                }
            }
        })
    }
}

type WatchEvents<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// A kube-runtime watcher with our backoff that starts over from a full
/// list when a server answers a resumed watch with an HTTP `410 Gone`
/// status. kube-runtime re-lists after a 410 sent as a watch ERROR event
/// (what kube-apiserver usually does) but would retry the expired version
/// forever after a 410 status, never seeing the cluster again.
fn relisting_watcher<K>(api: Api<K>, config: watcher::Config) -> WatchEvents<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    enum Run<K> {
        Start,
        Restart,
        Running(WatchEvents<K>),
    }
    futures::stream::unfold(Run::Start, move |run| {
        let (api, config) = (api.clone(), config.clone());
        async move {
            let mut events = match run {
                Run::Running(events) => events,
                Run::Start | Run::Restart => {
                    if matches!(run, Run::Restart) {
                        // A server that answers every watch with 410 must
                        // not be listed in a tight loop.
                        tokio::time::sleep(backoff::MAX_DELAY / 5).await;
                    }
                    watcher(api, config).backoff(WatchBackoff::default()).boxed()
                }
            };
            let event = events.next().await?;
            let next =
                if event.as_ref().is_err_and(is_gone_status) { Run::Restart } else { Run::Running(events) };
            Some((event, next))
        }
    })
    .boxed()
}

fn is_gone_status(err: &watcher::Error) -> bool {
    matches!(
        err,
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) | watcher::Error::WatchFailed(kube::Error::Api(status))
            if status.code == 410
    )
}

/// Folds one update into the index and the health record; returns whether
/// the set of client pods changed.
fn apply(
    index: &mut PodIndex,
    update: Update,
    health: &SourceHealth,
    last_error: &mut Option<String>,
) -> bool {
    let (what, result) = match update {
        Update::Pods(i, event) => match *event {
            Ok(event) => {
                note_progress(&event, health);
                ("pods", Ok(index.apply_pod_event(i, event)))
            }
            Err(err) => ("pods", Err(err)),
        },
        Update::Namespaces(event) => match *event {
            Ok(event) => {
                note_progress(&event, health);
                ("namespaces", Ok(index.apply_namespace_event(event)))
            }
            Err(err) => ("namespaces", Err(err)),
        },
    };
    match result {
        Ok(changed) => {
            if last_error.take().is_some() {
                tracing::info!("watching {what} again");
            }
            changed
        }
        Err(err) => {
            // The allow-list stays as it is; the watcher retries with
            // backoff (and re-lists after 410 Gone).
            let text = err.to_string();
            if health.record_error(last_error, text.clone()) {
                tracing::warn!("watching {what}: {text}; keeping the current client list and retrying");
            }
            false
        }
    }
}

/// Records that the API answered: a completed list is a sync. `Init` is
/// not an answer: kube-runtime emits it before it sends the list request.
fn note_progress<K>(event: &watcher::Event<K>, health: &SourceHealth) {
    if matches!(event, watcher::Event::Init) {
        return;
    }
    health.set_state(SourceState::Watching);
    if matches!(event, watcher::Event::InitDone) {
        health.last_sync_unix_s.store(unix_now_s(), Ordering::Relaxed);
        health.relists.fetch_add(1, Ordering::Relaxed);
    }
}
