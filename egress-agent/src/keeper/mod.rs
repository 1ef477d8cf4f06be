//! The state keeper: a small process beside the agent (in Kubernetes a
//! native sidecar of the gateway pod, in the same pod so it shares its
//! lifetime) that holds duplicates of the datapath's file descriptors, the
//! TCX links and the maps. A link or map lives as long as one descriptor
//! does, so when the agent dies (`kill -9`, a crash, a new image) the
//! program stays attached and keeps forwarding with its conntrack, and the
//! next agent takes the same maps and links back from the keeper instead of
//! starting empty. It needs no capabilities and no bpffs: descriptors travel
//! over a Unix socket (SCM_RIGHTS) on a volume the two containers share.
//!
//! Protocol, one seqpacket message each way, text plus descriptors:
//! - `GET` → `HELD epoch name…` with the descriptors in that order (the
//!   epoch counts claims);
//! - `CLAIM epoch` → `OWNER new-epoch` if nobody claimed since the caller's
//!   `GET` (an agent claims once it has checked and attached what it got),
//!   else `SUPERSEDED`;
//! - `PUT epoch name…` + descriptors → `OK` (they replace what was held);
//!   `SUPERSEDED` if another agent has claimed the datapath since; `UNKNOWN`
//!   for an epoch an earlier keeper gave (the keeper restarted: claim
//!   again; `CLAIM` answers the same to such an epoch); `DETACH`
//!   after a `DROP` that no claim has followed (the agent that was told to
//!   detach must not hand the datapath back);
//! - `WATCH` → nothing until a `DROP`, then `DETACH`;
//! - `DROP` → `DROPPED objects agents`: everything is closed and the
//!   watching agents are told.
pub mod server;
pub mod wire;

use std::{
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

/// Where the keeper listens unless told otherwise (an emptyDir shared by
/// the gateway pod's containers).
pub const DEFAULT_SOCKET: &str = "/run/egress-gateway/keeper.sock";

/// The client side, used by the agent and by `egress-agent detach`.
#[derive(Clone, Debug)]
pub struct Keeper {
    path: PathBuf,
}

/// What the keeper held, by name, and the epoch that makes the caller its
/// owner (none when there was no keeper to ask).
#[derive(Default)]
pub struct Held {
    pub epoch: Option<u64>,
    objects: Vec<(String, OwnedFd)>,
}

impl Held {
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.objects.iter().map(|(name, _)| name.as_str()).collect()
    }

    pub fn take(&mut self, name: &str) -> Option<OwnedFd> {
        let pos = self.objects.iter().position(|(n, _)| n == name)?;
        Some(self.objects.swap_remove(pos).1)
    }
}

/// The keeper's answer to a deposit.
#[derive(Debug, PartialEq, Eq)]
pub enum Deposit {
    Kept,
    /// `egress-agent detach` ran: the caller must let go and exit.
    Detach,
    /// Another agent has taken the datapath since: the caller must exit
    /// without detaching.
    Superseded,
    /// The keeper restarted since the caller's claim: claim again.
    Unknown,
}

/// The keeper's answer to a claim.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    Owner(u64),
    Superseded,
    /// The epoch came from an earlier keeper: `GET` and claim again.
    Unknown,
}

/// The keeper's answer to a `DROP`.
#[derive(Debug, PartialEq, Eq)]
pub struct Dropped {
    pub objects: usize,
    /// Running agents told to detach (they clean up after themselves).
    pub agents: usize,
}

/// How long a request may take: a keeper that hangs must not freeze the
/// agent's loop.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Keeper {
    pub fn new(path: &Path) -> Keeper {
        Keeper { path: path.to_path_buf() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn request(&self, text: &str, fds: &[BorrowedFd<'_>]) -> Result<(String, Vec<OwnedFd>)> {
        let sock = wire::connect(&self.path)
            .with_context(|| format!("connecting to the state keeper at {}", self.path.display()))?;
        wire::set_timeout(&sock, REQUEST_TIMEOUT)?;
        wire::send(&sock, text, fds).context("sending to the state keeper")?;
        match wire::recv(&sock, true).context("reading the state keeper's answer")? {
            Some(reply) => Ok(reply),
            None => {
                bail!("the state keeper at {} closed the connection without answering", self.path.display())
            }
        }
    }

    /// Takes duplicates of everything the keeper holds (it keeps its own).
    pub fn fetch(&self) -> Result<Held> {
        let (text, fds) = self.request("GET", &[])?;
        let mut words = text.split_whitespace();
        let epoch = match (words.next(), words.next().and_then(|e| e.parse().ok())) {
            (Some("HELD"), Some(epoch)) => epoch,
            _ => bail!("unexpected answer from the state keeper: {text:?}"),
        };
        let names: Vec<String> = words.map(str::to_string).collect();
        if names.len() != fds.len() {
            bail!("the state keeper named {} objects but sent {} descriptors", names.len(), fds.len());
        }
        Ok(Held { epoch: Some(epoch), objects: names.into_iter().zip(fds).collect() })
    }

    /// Hands the keeper duplicates of `objects`, replacing what it held,
    /// as the owner of `epoch` (from [`Keeper::fetch`]).
    pub fn deposit(&self, epoch: u64, objects: &[(&str, BorrowedFd<'_>)]) -> Result<Deposit> {
        let names: Vec<&str> = objects.iter().map(|(name, _)| *name).collect();
        let fds: Vec<BorrowedFd<'_>> = objects.iter().map(|(_, fd)| fd.as_fd()).collect();
        let (text, _) = self.request(&format!("PUT {epoch} {}", names.join(" ")), &fds)?;
        match text.as_str() {
            "OK" => Ok(Deposit::Kept),
            "DETACH" => Ok(Deposit::Detach),
            "SUPERSEDED" => Ok(Deposit::Superseded),
            "UNKNOWN" => Ok(Deposit::Unknown),
            other => bail!("the state keeper refused the datapath: {other}"),
        }
    }

    /// Becomes the datapath's owner, if nobody has since the `GET` that
    /// returned `seen`.
    pub fn claim(&self, seen: u64) -> Result<Claim> {
        let (text, _) = self.request(&format!("CLAIM {seen}"), &[])?;
        match text.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["OWNER", epoch] => {
                Ok(Claim::Owner(epoch.parse().with_context(|| format!("bad epoch in {text:?}"))?))
            }
            ["SUPERSEDED"] => Ok(Claim::Superseded),
            ["UNKNOWN"] => Ok(Claim::Unknown),
            _ => bail!("unexpected answer from the state keeper: {text:?}"),
        }
    }

    /// Makes the keeper close everything it holds and tell its watchers.
    pub fn drop_all(&self) -> Result<Dropped> {
        let (text, _) = self.request("DROP", &[])?;
        let mut words = text.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|n| n.parse().ok()),
            words.next().and_then(|n| n.parse().ok()),
        ) {
            (Some("DROPPED"), Some(objects), Some(agents)) => Ok(Dropped { objects, agents }),
            _ => bail!("unexpected answer from the state keeper: {text:?}"),
        }
    }

    /// A connection on which the keeper says `DETACH` after a `DROP`.
    pub fn watch(&self) -> Result<OwnedFd> {
        let sock = wire::connect(&self.path)
            .with_context(|| format!("connecting to the state keeper at {}", self.path.display()))?;
        wire::send(&sock, "WATCH", &[]).context("sending to the state keeper")?;
        Ok(sock)
    }
}
