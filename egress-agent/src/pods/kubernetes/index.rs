//! What the watchers have told us, folded into the set of client pods.
//!
//! Pure state, no I/O: each watcher's events are applied to a [`WatchedSet`]
//! with Kubernetes' relist semantics (a relist replaces everything, so what
//! vanished while a watch was down is removed), and [`PodIndex::snapshot`]
//! turns the sets into the allow-list.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use k8s_openapi::{
    api::core::v1::{Namespace, Pod},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{runtime::watcher::Event, ResourceExt};

use crate::pods::{selector::LabelSelector, ClientIdentity, ClientSnapshot};

/// The objects one watcher currently knows, keyed by namespace/name.
pub struct WatchedSet<T> {
    live: BTreeMap<String, T>,
    /// Filled between `Init` and `InitDone`; replaces `live` at the end.
    relisting: Option<BTreeMap<String, T>>,
    /// Whether a full list has completed at least once.
    synced: bool,
}

impl<T> Default for WatchedSet<T> {
    fn default() -> Self {
        WatchedSet { live: BTreeMap::new(), relisting: None, synced: false }
    }
}

impl<T: PartialEq> WatchedSet<T> {
    /// Applies one event. `admit` returns the value to hold for an object, or
    /// `None` when the object no longer qualifies (it is then forgotten).
    /// Returns whether the live set changed.
    pub fn apply<K: ResourceExt>(&mut self, event: Event<K>, admit: impl Fn(&K) -> Option<T>) -> bool {
        match event {
            Event::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            Event::InitApply(object) => {
                let buffer = self.relisting.get_or_insert_with(BTreeMap::new);
                if let Some(value) = admit(&object) {
                    buffer.insert(key_of(&object), value);
                }
                false
            }
            Event::InitDone => {
                let listed = self.relisting.take().unwrap_or_default();
                self.synced = true;
                let changed = listed != self.live;
                self.live = listed;
                changed
            }
            Event::Apply(object) => match admit(&object) {
                Some(value) => {
                    let key = key_of(&object);
                    let changed = self.live.get(&key) != Some(&value);
                    self.live.insert(key, value);
                    changed
                }
                None => self.live.remove(&key_of(&object)).is_some(),
            },
            Event::Delete(object) => self.live.remove(&key_of(&object)).is_some(),
        }
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

/// `namespace/name`, or just the name for cluster-scoped objects (Namespaces).
fn key_of<K: ResourceExt>(object: &K) -> String {
    match object.namespace() {
        Some(namespace) => format!("{namespace}/{}", object.name_any()),
        None => object.name_any(),
    }
}

/// A pod that may use the gateway, as far as the pod itself tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Its tunnel address: its IPv4 address, or in an IPv6-only cluster
    /// its IPv6 one (the first global one of `status.podIPs`).
    pub ip: IpAddr,
    /// Its IPv6 address beside its IPv4 one, in a dual-stack cluster (the
    /// first global one of `status.podIPs`).
    pub ip6: Option<Ipv6Addr>,
    /// The newer pod wins an IP both claim.
    pub created: Option<Time>,
}

impl ClientPod {
    /// The pod as a client, or `None` when it must not be one: it lacks the
    /// label, has no pod IP yet (an IPv4 one, or a global IPv6 one when it
    /// has no IPv4), shares the node's network (its IP is
    /// the node's), or has finished (Succeeded/Failed: its IP is free for
    /// reuse). A pod that is terminating gracefully stays a client until it
    /// is gone: it still holds its IP and may be finishing work that needs
    /// the outside world.
    pub fn admit(pod: &Pod, selector: &LabelSelector) -> Option<ClientPod> {
        if !selector.matches(pod.labels()) {
            return None;
        }
        let spec = pod.spec.as_ref()?;
        if spec.host_network == Some(true) {
            return None;
        }
        let status = pod.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
            return None;
        }
        let pod_ips =
            || status.pod_ips.iter().flatten().map(|p| p.ip.as_str()).chain(status.pod_ip.as_deref());
        let ip6 =
            pod_ips().filter_map(|ip| ip.parse::<Ipv6Addr>().ok()).find(crate::netdev::is_global_unicast);
        let (ip, ip6) = match pod_ips().find_map(|ip| ip.parse::<Ipv4Addr>().ok()) {
            Some(ip) => (IpAddr::V4(ip), ip6),
            None => (IpAddr::V6(ip6?), None),
        };
        Some(ClientPod {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            ip,
            ip6,
            created: pod.metadata.creation_timestamp.clone(),
        })
    }

    /// How the pod appears in the snapshot and in logs, with `ip6` as the
    /// snapshot gives it. It includes the UID: when another pod takes over
    /// an IP, the value changes and the old pod's flows are forgotten.
    fn identity(&self, ip6: Option<Ipv6Addr>) -> ClientIdentity {
        ClientIdentity { name: format!("{}/{}", self.namespace, self.name), uid: self.uid.clone(), ipv6: ip6 }
    }

    /// Its IPv6 address, whichever role it has.
    fn ipv6(&self) -> Option<Ipv6Addr> {
        match self.ip {
            IpAddr::V6(ip6) => Some(ip6),
            IpAddr::V4(_) => self.ip6,
        }
    }

    /// Whether this pod is newer than `held`: it wins an address both
    /// claim.
    fn newer_than(&self, held: &ClientPod) -> bool {
        (&self.created, &self.uid) > (&held.created, &held.uid)
    }
}

/// Every watcher's state, and which namespaces may have clients.
pub struct PodIndex {
    pub pods: Vec<WatchedSet<ClientPod>>,
    /// Present when a namespace selector restricts the clients.
    pub namespaces: Option<WatchedSet<()>>,
    pub pod_selector: LabelSelector,
    pub namespace_selector: Option<LabelSelector>,
}

impl PodIndex {
    pub fn new(
        pod_watchers: usize,
        pod_selector: LabelSelector,
        namespace_selector: Option<LabelSelector>,
    ) -> Self {
        PodIndex {
            pods: (0..pod_watchers).map(|_| WatchedSet::default()).collect(),
            namespaces: namespace_selector.as_ref().map(|_| WatchedSet::default()),
            pod_selector,
            namespace_selector,
        }
    }

    pub fn apply_pod_event(&mut self, watcher: usize, event: Event<Pod>) -> bool {
        let selector = &self.pod_selector;
        self.pods[watcher].apply(event, |pod| ClientPod::admit(pod, selector))
    }

    pub fn apply_namespace_event(&mut self, event: Event<Namespace>) -> bool {
        let (Some(set), Some(selector)) = (self.namespaces.as_mut(), self.namespace_selector.as_ref()) else {
            return false;
        };
        set.apply(event, |ns| selector.matches(ns.labels()).then_some(()))
    }

    /// Whether every watcher has completed a full list: only then is a
    /// snapshot complete enough to replace the datapath's allow-list.
    pub fn synced(&self) -> bool {
        self.pods.iter().all(WatchedSet::synced) && self.namespaces.as_ref().is_none_or(WatchedSet::synced)
    }

    pub fn snapshot(&self) -> ClientSnapshot {
        let mut owners: BTreeMap<IpAddr, &ClientPod> = BTreeMap::new();
        let namespace_allowed =
            |ns: &str| self.namespaces.as_ref().is_none_or(|set| set.live.contains_key(ns));
        for pod in self.pods.iter().flat_map(|set| set.live.values()) {
            if !namespace_allowed(&pod.namespace) {
                continue;
            }
            // Two live pods with one IP happen only in a stale moment (an
            // old pod's deletion not yet seen); the newer pod owns it now.
            match owners.get(&pod.ip) {
                Some(held) if !pod.newer_than(held) => {}
                _ => {
                    owners.insert(pod.ip, pod);
                }
            }
        }
        // The same for IPv6, among the pods that own their tunnel address
        // (a dual-stack pod's second address, an IPv6-only pod's only
        // one): an IPv6 address is one pod's, never two clients' at once.
        let mut owners6: BTreeMap<Ipv6Addr, &ClientPod> = BTreeMap::new();
        for pod in owners.values() {
            let Some(ip6) = pod.ipv6() else { continue };
            match owners6.get(&ip6) {
                Some(held) if !pod.newer_than(held) => {}
                _ => {
                    owners6.insert(ip6, pod);
                }
            }
        }
        let owns =
            |pod: &ClientPod, ip6: &Ipv6Addr| owners6.get(ip6).is_some_and(|owner| owner.uid == pod.uid);
        owners
            .into_iter()
            .filter_map(|(ip, pod)| match ip {
                IpAddr::V4(_) => Some((ip, pod.identity(pod.ip6.filter(|ip6| owns(pod, ip6))))),
                // Listed by its IPv6 address: only while it owns it.
                IpAddr::V6(ip6) => owns(pod, &ip6).then(|| (ip, pod.identity(None))),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, PodSpec, PodStatus};
    use kube::api::ObjectMeta;

    fn pod(name: &str, ip: &str, labeled: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("apps".into()),
                uid: Some(format!("uid-{name}")),
                labels: labeled.then(|| [("egress".to_string(), "external".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: (!ip.is_empty()).then(|| ip.to_string()),
                pod_ips: (!ip.is_empty()).then(|| vec![PodIP { ip: ip.into() }]),
                ..Default::default()
            }),
        }
    }

    fn index() -> PodIndex {
        PodIndex::new(1, LabelSelector::parse("egress=external").unwrap(), None)
    }

    fn ips(index: &PodIndex) -> Vec<String> {
        index.snapshot().keys().map(|ip| ip.to_string()).collect()
    }

    #[test]
    fn relist_replaces_and_removes_what_vanished() {
        let mut idx = index();
        idx.apply_pod_event(0, Event::Init);
        idx.apply_pod_event(0, Event::InitApply(pod("a", "10.0.0.1", true)));
        assert!(!idx.synced(), "not synced before InitDone");
        assert!(idx.apply_pod_event(0, Event::InitDone));
        assert_eq!(ips(&idx), ["10.0.0.1"]);
        idx.apply_pod_event(0, Event::Apply(pod("b", "10.0.0.2", true)));
        // The watch broke and b vanished meanwhile: the relist drops it,
        // and the old contents serve until the relist is complete.
        idx.apply_pod_event(0, Event::Init);
        idx.apply_pod_event(0, Event::InitApply(pod("a", "10.0.0.1", true)));
        assert_eq!(ips(&idx), ["10.0.0.1", "10.0.0.2"]);
        assert!(idx.apply_pod_event(0, Event::InitDone));
        assert_eq!(ips(&idx), ["10.0.0.1"]);
    }

    #[test]
    fn not_clients_unlabeled_hostnetwork_terminal_or_without_ip() {
        let mut idx = index();
        idx.apply_pod_event(0, Event::InitDone);
        let mut host = pod("host", "192.168.1.5", true);
        host.spec.as_mut().unwrap().host_network = Some(true);
        let mut done = pod("done", "10.0.0.4", true);
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        for p in [pod("plain", "10.0.0.3", false), host, done, pod("pending", "", true)] {
            assert!(!idx.apply_pod_event(0, Event::Apply(p)));
        }
        assert!(ips(&idx).is_empty());
        // Losing the label, or finishing, removes a client.
        idx.apply_pod_event(0, Event::Apply(pod("a", "10.0.0.1", true)));
        assert!(idx.apply_pod_event(0, Event::Apply(pod("a", "10.0.0.1", false))));
        assert!(ips(&idx).is_empty());
    }

    #[test]
    fn reused_ip_belongs_to_the_newer_pod_and_changes_identity() {
        let mut idx = index();
        idx.apply_pod_event(0, Event::InitDone);
        let mut old = pod("old", "10.0.0.9", true);
        old.metadata.creation_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        let mut new = pod("new", "10.0.0.9", true);
        new.metadata.creation_timestamp = Some(Time("2026-01-02T00:00:00Z".parse().unwrap()));
        idx.apply_pod_event(0, Event::Apply(new));
        idx.apply_pod_event(0, Event::Apply(old));
        assert_eq!(idx.snapshot()[&"10.0.0.9".parse().unwrap()].name, "apps/new");
    }

    /// `pod` with `status.podIPs` as a dual-stack cluster lists them.
    fn dual_stack(name: &str, ips: &[&str]) -> Pod {
        let mut p = pod(name, ips[0], true);
        let status = p.status.as_mut().unwrap();
        status.pod_ips = Some(ips.iter().map(|ip| PodIP { ip: ip.to_string() }).collect());
        p
    }

    #[test]
    fn a_dual_stack_pod_is_a_client_with_its_global_ipv6_address() {
        let mut idx = index();
        idx.apply_pod_event(0, Event::InitDone);
        // Either order in podIPs; a link-local address is never a pod's.
        idx.apply_pod_event(0, Event::Apply(dual_stack("a", &["10.0.0.1", "fd00:10:244::5"])));
        idx.apply_pod_event(0, Event::Apply(dual_stack("b", &["fd00:10:244::7", "10.0.0.2"])));
        idx.apply_pod_event(0, Event::Apply(dual_stack("c", &["10.0.0.3", "fe80::1"])));
        idx.apply_pod_event(0, Event::Apply(pod("d", "10.0.0.4", true)));
        let snapshot = idx.snapshot();
        let ipv6 = |ip: &str| snapshot[&ip.parse().unwrap()].ipv6.map(|a| a.to_string());
        assert_eq!(ipv6("10.0.0.1").as_deref(), Some("fd00:10:244::5"));
        assert_eq!(ipv6("10.0.0.2").as_deref(), Some("fd00:10:244::7"));
        assert_eq!(ipv6("10.0.0.3"), None);
        assert_eq!(ipv6("10.0.0.4"), None);
        // Nor is a link-local address a client's tunnel address.
        assert!(!idx.apply_pod_event(0, Event::Apply(dual_stack("e", &["fe80::9"]))));
    }

    /// In an IPv6-only cluster a pod tunnels over IPv6 from its own
    /// address: it is listed by it.
    #[test]
    fn an_ipv6_only_pod_is_a_client_by_its_ipv6_address() {
        let mut idx = index();
        idx.apply_pod_event(0, Event::InitDone);
        assert!(idx.apply_pod_event(0, Event::Apply(dual_stack("v6", &["fe80::1", "fd00:10:244::9"]))));
        let snapshot = idx.snapshot();
        let identity = &snapshot[&"fd00:10:244::9".parse().unwrap()];
        assert_eq!((identity.name.as_str(), identity.ipv6), ("apps/v6", None), "its one address is the key");
        assert_eq!(snapshot.len(), 1);
    }

    /// An IPv6 address both an IPv6-only pod and a dual-stack pod claim
    /// (a stale moment, or a hostile status) is the newer pod's alone.
    #[test]
    fn an_ipv6_only_pod_and_a_dual_stack_pod_never_share_an_address() {
        for v6_only_is_newer in [true, false] {
            let mut idx = index();
            idx.apply_pod_event(0, Event::InitDone);
            let mut v6 = dual_stack("v6", &["fd00:10:244::9"]);
            let mut dual = dual_stack("dual", &["10.0.0.8", "fd00:10:244::9"]);
            let (newer, older) = if v6_only_is_newer { (&mut v6, &mut dual) } else { (&mut dual, &mut v6) };
            newer.metadata.creation_timestamp = Some(Time("2026-01-02T00:00:00Z".parse().unwrap()));
            older.metadata.creation_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
            idx.apply_pod_event(0, Event::Apply(v6));
            idx.apply_pod_event(0, Event::Apply(dual));
            let snapshot = idx.snapshot();
            let v6_listed = snapshot.contains_key(&"fd00:10:244::9".parse().unwrap());
            let dual_ipv6 = snapshot[&"10.0.0.8".parse().unwrap()].ipv6;
            assert_eq!(v6_listed, v6_only_is_newer, "the IPv6-only pod is a client only if it is newer");
            assert_eq!(dual_ipv6.is_some(), !v6_only_is_newer, "the dual-stack pod sends IPv6 only if newer");
        }
    }

    /// Two pods claiming one IPv6 address (a stale moment, or a hostile
    /// status): only the newer sends as it, the older keeps its IPv4.
    #[test]
    fn a_claimed_ipv6_address_belongs_to_the_newer_pod_alone() {
        let mut idx = index();
        idx.apply_pod_event(0, Event::InitDone);
        let mut old = dual_stack("old", &["10.0.0.8", "fd00:10:244::9"]);
        old.metadata.creation_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().unwrap()));
        let mut new = dual_stack("new", &["10.0.0.9", "fd00:10:244::9"]);
        new.metadata.creation_timestamp = Some(Time("2026-01-02T00:00:00Z".parse().unwrap()));
        idx.apply_pod_event(0, Event::Apply(new));
        idx.apply_pod_event(0, Event::Apply(old));
        let snapshot = idx.snapshot();
        assert_eq!(snapshot[&"10.0.0.9".parse().unwrap()].ipv6, Some("fd00:10:244::9".parse().unwrap()));
        assert_eq!(snapshot[&"10.0.0.8".parse().unwrap()].ipv6, None);
        assert_eq!(snapshot.len(), 2, "both stay clients by their IPv4");
    }
}
