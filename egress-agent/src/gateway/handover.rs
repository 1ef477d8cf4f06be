//! The agent's side of the state keeper (`crate::keeper`): take the
//! previous agent's datapath at start, hand ours over after attaching and at
//! every sweep (a restarted keeper gets it back within one interval), and
//! listen for `egress-agent detach`.
use std::{os::fd::OwnedFd, path::Path};

use tokio::io::unix::AsyncFd;

use crate::{
    datapath::loader::Datapath,
    keeper::{wire, Deposit, Held, Keeper},
};

pub enum KeeperEvent {
    /// `egress-agent detach` ran.
    Detach,
    /// The keeper went away; a restart now would start from empty maps.
    Gone,
}

pub struct Handover {
    keeper: Option<Keeper>,
    watch: Option<AsyncFd<OwnedFd>>,
    /// The keeper holds our datapath as of the last hand-over.
    holding: bool,
}

impl Handover {
    pub fn new(socket: Option<&Path>) -> Handover {
        Handover { keeper: socket.map(Keeper::new), watch: None, holding: false }
    }

    pub fn holding(&self) -> bool {
        self.holding
    }

    /// What a previous agent left with the keeper (nothing without one).
    pub fn take_previous(&self) -> Held {
        let Some(keeper) = &self.keeper else { return Held::default() };
        match keeper.fetch() {
            Ok(held) => {
                if !held.is_empty() {
                    tracing::info!(objects = %held.names().join(" "), "taking over the datapath the state keeper holds");
                }
                held
            }
            Err(err) => {
                tracing::warn!("{err:#}: starting with a new datapath");
                Held::default()
            }
        }
    }

    /// Gives the keeper duplicates of the datapath's links and maps.
    /// `Detach` if `egress-agent detach` ran meanwhile.
    pub fn hand_over(&mut self, datapath: &Datapath) -> Option<KeeperEvent> {
        let Some(keeper) = &self.keeper else { return None };
        let objects = datapath.state_objects();
        let borrowed: Vec<_> = objects.iter().map(|(name, fd)| (name.as_str(), *fd)).collect();
        match keeper.deposit(&borrowed) {
            Ok(Deposit::Kept) => {
                if !self.holding {
                    tracing::info!(socket = %keeper.path().display(), "the state keeper holds the datapath: it survives an agent restart");
                }
                self.holding = true;
            }
            Ok(Deposit::Detach) => return Some(KeeperEvent::Detach),
            Err(err) => {
                if self.holding {
                    tracing::warn!(
                        "{err:#}: a restart now would start from empty maps (retrying at each sweep)"
                    );
                }
                self.holding = false;
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
        None
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
            tracing::warn!("the state keeper went away: a restart now would start from empty maps (handing over again at each sweep)");
        }
        event
    }
}
