//! The agent's side of the state keeper (`crate::keeper`): take the
//! previous agent's datapath at start, hand ours over after attaching, after
//! every client change and at every sweep (a restarted keeper gets it back
//! within one interval), and listen for `egress-agent detach`.
use std::{
    collections::BTreeMap,
    io::{Read, Seek, Write},
    net::IpAddr,
    os::fd::{AsFd, FromRawFd, OwnedFd},
    path::Path,
};

use anyhow::Context;
use tokio::io::unix::AsyncFd;

use super::reconcile::ClientTable;
use crate::{
    datapath::loader::Datapath,
    keeper::{wire, Claim, Deposit, Held, Keeper},
    pods::ClientIdentity,
};

/// The keeper's name for the client identities (a memfd): which pod held
/// each address, so the next agent can tell an address that changed hands
/// while no agent ran.
const CLIENTS: &str = "clients";

pub enum KeeperEvent {
    /// `egress-agent detach` ran.
    Detach,
    /// Another agent took the datapath over: exit without detaching.
    Superseded,
    /// The keeper went away; a restart now would start from empty maps.
    Gone,
}

pub struct Handover {
    keeper: Option<Keeper>,
    /// The keeper's epoch when we took what it held (before we claim).
    seen: Option<u64>,
    /// Ours once a claim made us the datapath's owner.
    epoch: Option<u64>,
    watch: Option<AsyncFd<OwnedFd>>,
    /// The keeper holds our datapath as of the last hand-over.
    holding: bool,
}

impl Handover {
    pub fn new(socket: Option<&Path>) -> Handover {
        Handover { keeper: socket.map(Keeper::new), seen: None, epoch: None, watch: None, holding: false }
    }

    /// The keeper holds links of ours: the program stays attached without us.
    pub fn keeps_it_attached(&self, datapath: &Datapath) -> bool {
        self.holding && datapath.has_links()
    }

    /// What a previous agent left with the keeper (nothing without one).
    /// Ownership comes with the first hand-over, once it is attached.
    pub fn take_previous(&mut self) -> Held {
        let Some(keeper) = &self.keeper else { return Held::default() };
        match keeper.fetch() {
            Ok(held) => {
                if !held.is_empty() {
                    tracing::info!(objects = %held.names().join(" "), "taking over the datapath the state keeper holds");
                }
                self.seen = held.epoch;
                held
            }
            Err(err) => {
                tracing::warn!("{err:#}: starting with a new datapath");
                Held::default()
            }
        }
    }

    /// Gives the keeper duplicates of the datapath's links and maps, and
    /// the identities of its clients.
    pub fn hand_over(&mut self, datapath: &Datapath, clients: &ClientTable) -> Option<KeeperEvent> {
        // A keeper that restarted since our claim answers `UNKNOWN` once:
        // claim again and hand over in the same call.
        for _ in 0..2 {
            match self.try_hand_over(datapath, clients) {
                Some(Deposit::Unknown) => {
                    self.epoch = None;
                    self.seen = None;
                }
                Some(Deposit::Detach) => return Some(KeeperEvent::Detach),
                Some(Deposit::Superseded) => return Some(KeeperEvent::Superseded),
                Some(Deposit::Kept) | None => return None,
            }
        }
        None
    }

    fn try_hand_over(&mut self, datapath: &Datapath, clients: &ClientTable) -> Option<Deposit> {
        let Some(keeper) = &self.keeper else { return None };
        if self.epoch.is_none() {
            // Claim what we took at start; or, if the keeper was not there
            // then (or restarted since), whatever it holds now, which is
            // older than what we run.
            let seen = match self.seen.take() {
                Some(seen) => Some(seen),
                None => keeper.fetch().ok().and_then(|held| held.epoch),
            };
            match seen.map(|seen| keeper.claim(seen)) {
                Some(Ok(Claim::Owner(epoch))) => self.epoch = Some(epoch),
                Some(Ok(Claim::Superseded)) => return Some(Deposit::Superseded),
                Some(Ok(Claim::Unknown)) => return Some(Deposit::Unknown),
                Some(Err(err)) => tracing::warn!("{err:#}"),
                None => {}
            }
        }
        let epoch = self.epoch?;
        let identities = match write_identities(clients) {
            Ok(fd) => Some(fd),
            Err(err) => {
                tracing::warn!("recording the client identities for the state keeper: {err:#}");
                None
            }
        };
        let mut objects = datapath.state_objects();
        if let Some(fd) = &identities {
            objects.push((CLIENTS.to_string(), fd.as_fd()));
        }
        let borrowed: Vec<_> = objects.iter().map(|(name, fd)| (name.as_str(), *fd)).collect();
        match keeper.deposit(epoch, &borrowed) {
            Ok(Deposit::Kept) => {
                if !self.holding {
                    tracing::info!(socket = %keeper.path().display(), "the state keeper holds the datapath: it survives an agent restart");
                }
                self.holding = true;
            }
            Ok(other @ (Deposit::Detach | Deposit::Superseded | Deposit::Unknown)) => return Some(other),
            Err(err) => {
                if self.holding {
                    tracing::warn!(
                        "{err:#}: a restart now would start from empty maps (retrying at each sweep)"
                    );
                }
                self.holding = false;
                self.epoch = None;
                return None;
            }
        }
        if self.watch.is_none() {
            // SAFETY: the OwnedFd is moved in and stays open, unchanged,
            // for as long as the AsyncFd lives.
            let registered = keeper.watch().and_then(|fd| {
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                    .map_err(|e| anyhow::Error::new(e.into_parts().1))
            });
            match registered {
                Ok(watch) => self.watch = Some(watch),
                Err(err) => tracing::warn!("watching the state keeper: {err:#}"),
            }
        }
        Some(Deposit::Kept)
    }

    /// Waits for the keeper to say something (never, without a watch).
    pub async fn next_event(&mut self) -> KeeperEvent {
        let Some(watch) = &self.watch else { return std::future::pending().await };
        let event = loop {
            let Ok(mut guard) = watch.readable().await else { break KeeperEvent::Gone };
            match wire::recv(watch.get_ref(), false) {
                Ok(Some((text, _))) if text == "DETACH" => break KeeperEvent::Detach,
                Ok(Some(_)) => continue,
                Ok(None) => break KeeperEvent::Gone,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(_) => break KeeperEvent::Gone,
            }
        };
        if matches!(event, KeeperEvent::Gone) {
            self.watch = None;
            self.holding = false;
            self.epoch = None;
            tracing::warn!("the state keeper went away: a restart now would start from empty maps (handing over again at each sweep)");
        }
        event
    }
}

/// The client identities a previous agent handed over (empty if none).
pub fn previous_identities(previous: &mut Held) -> BTreeMap<IpAddr, ClientIdentity> {
    let Some(fd) = previous.take(CLIENTS) else { return BTreeMap::new() };
    let mut text = String::new();
    let mut file = std::fs::File::from(fd);
    if let Err(e) = file.rewind().and_then(|()| file.read_to_string(&mut text)) {
        tracing::warn!("reading the previous client identities: {e}");
        return BTreeMap::new();
    }
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let ip = fields.next()?.parse().ok()?;
            let name = fields.next()?.to_string();
            let uid = fields.next().unwrap_or("").to_string();
            let ipv6 = fields.next().and_then(|field| field.parse().ok());
            Some((ip, ClientIdentity { name, uid, ipv6 }))
        })
        .collect()
}

/// The identities of the clients we know, one `ip\tname\tuid\tipv6` line
/// each (the tunnel address first: an IPv4 one, or an IPv6-only pod's IPv6
/// one; the second IPv6 address empty for a client without one),
/// in a memfd (no file system needed, freed with its last descriptor).
fn write_identities(clients: &ClientTable) -> anyhow::Result<OwnedFd> {
    // SAFETY: memfd_create with a NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"egress-clients".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create");
    }
    // SAFETY: a new descriptor that nothing else owns.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut text = String::new();
    for (ip, client) in clients.clients() {
        if !client.carried_over {
            let identity = &client.identity;
            let ipv6 = identity.ipv6.map(|ipv6| ipv6.to_string()).unwrap_or_default();
            text.push_str(&format!("{ip}\t{}\t{}\t{ipv6}\n", identity.name, identity.uid));
        }
    }
    file.write_all(text.as_bytes())?;
    Ok(file.into())
}
