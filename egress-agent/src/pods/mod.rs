//! Where client pods come from. The datapath never knows which source fed
//! it: every source produces complete snapshots of the allowed clients.
pub mod file;

use std::{collections::BTreeMap, net::Ipv4Addr};

/// The complete set of clients at one moment: address -> a name for logs.
pub type ClientSnapshot = BTreeMap<Ipv4Addr, String>;

/// A source of client snapshots. Each published snapshot replaces the
/// previous one; a source that loses its backend keeps quiet rather than
/// publishing an empty set, so an outage never flushes the datapath.
pub trait PodSource: Send + 'static {
    /// Human-readable description for logs.
    fn describe(&self) -> String;
    /// Runs until the receiver is gone, publishing snapshots as they change.
    fn run(
        self: Box<Self>,
        updates: tokio::sync::watch::Sender<Option<ClientSnapshot>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
}
