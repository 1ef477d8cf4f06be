//! Where client pods come from. The datapath never knows which source fed
//! it: every source produces complete snapshots of the allowed clients.
pub mod file;
pub mod kubernetes;
pub mod selector;

use std::{
    collections::BTreeMap,
    future::Future,
    net::{IpAddr, Ipv6Addr},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

/// The complete set of clients at one moment, by tunnel address: a pod's
/// IPv4 address, or the IPv6 address of a pod without IPv4 (an IPv6-only
/// cluster's, which tunnels over IPv6 from it).
pub type ClientSnapshot = BTreeMap<IpAddr, ClientIdentity>;

/// Who holds a client address, and its IPv6 address if it has one. Another
/// name or UID for an address means another pod now holds it: the gateway
/// forgets the old one's flows. A changed IPv6 address alone (given to a
/// newer pod, edited in a pods file) moves only the IPv6 flows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// `namespace/name` for Kubernetes; the name on its line for a file.
    pub name: String,
    /// The pod's UID (Kubernetes only): tells apart two pods of one name.
    pub uid: String,
    /// The pod's IPv6 address (a dual-stack pod's): it may send IPv6 as
    /// this address alone, through the tunnel of its IPv4. None for a pod
    /// listed by its IPv6 address, which is its only one.
    pub ipv6: Option<Ipv6Addr>,
}

impl ClientIdentity {
    /// Whether `other` names the same pod: a changed IPv6 address alone
    /// does not make another client (its IPv4 flows go on).
    pub fn same_holder(&self, other: &ClientIdentity) -> bool {
        self.name == other.name && self.uid == other.uid
    }
}

impl std::fmt::Display for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        if !self.uid.is_empty() {
            write!(f, " uid={}", self.uid)?;
        }
        if let Some(ipv6) = self.ipv6 {
            write!(f, " ipv6={ipv6}")?;
        }
        Ok(())
    }
}

/// A source of client snapshots. Each published snapshot replaces the
/// previous one; a source that loses its backend keeps quiet rather than
/// publishing an empty set, so an outage never flushes the datapath.
pub trait PodSource: Send + 'static {
    /// Human-readable description for logs.
    fn describe(&self) -> String;
    /// Runs until the receiver is gone, publishing snapshots as they change
    /// (the first one once the source knows its complete list) and keeping
    /// `health` current.
    fn run(
        self: Box<Self>,
        updates: tokio::sync::watch::Sender<Option<ClientSnapshot>>,
        health: Arc<SourceHealth>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// What the source is doing, for metrics and logs.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceState {
    /// Not yet answered: the first list is pending.
    Starting = 0,
    /// Lists and watches succeed.
    Watching = 1,
    /// The last request failed; retrying with backoff, list kept.
    Retrying = 2,
}

impl SourceState {
    pub const ALL: [SourceState; 3] = [SourceState::Starting, SourceState::Watching, SourceState::Retrying];

    pub fn name(self) -> &'static str {
        match self {
            SourceState::Starting => "starting",
            SourceState::Watching => "watching",
            SourceState::Retrying => "retrying",
        }
    }
}

/// Shared between the source (writer), readiness and metrics (readers).
#[derive(Default, Debug)]
pub struct SourceHealth {
    /// A complete client list has been published at least once.
    pub synced: AtomicBool,
    state: AtomicU8,
    /// Unix time of the last completed full list (or successful file read).
    pub last_sync_unix_s: AtomicU64,
    /// Completed full lists, the first included.
    pub relists: AtomicU64,
    /// Failed requests (each is retried).
    pub errors: AtomicU64,
}

impl SourceHealth {
    pub fn state(&self) -> SourceState {
        match self.state.load(Ordering::Relaxed) {
            1 => SourceState::Watching,
            2 => SourceState::Retrying,
            _ => SourceState::Starting,
        }
    }

    pub fn set_state(&self, state: SourceState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Records a failed attempt: the client list is kept and the source
    /// retries. Returns whether `error` differs from the previous one, so
    /// that each distinct error is logged once, not once per retry.
    pub fn record_error(&self, last_error: &mut Option<String>, error: String) -> bool {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.set_state(SourceState::Retrying);
        let new = last_error.as_deref() != Some(error.as_str());
        *last_error = Some(error);
        new
    }
}

pub fn unix_now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
