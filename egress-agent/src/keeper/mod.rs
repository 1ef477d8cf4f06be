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
//! - `GET` → `HELD name…` with the descriptors in that order;
//! - `PUT name…` + descriptors → `OK` (they replace what was held), or
//!   `DETACH` after a `DROP` that no `GET` has followed (the agent that
//!   was told to detach must not hand the datapath back);
//! - `WATCH` → nothing until a `DROP`, then `DETACH`;
//! - `DROP` → `DROPPED n`: everything is closed and watchers are told.
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

/// What the keeper held, by name.
#[derive(Default)]
pub struct Held {
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
}

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
        let names: Vec<String> = match text.strip_prefix("HELD") {
            Some(rest) => rest.split_whitespace().map(str::to_string).collect(),
            None => bail!("unexpected answer from the state keeper: {text:?}"),
        };
        if names.len() != fds.len() {
            bail!("the state keeper named {} objects but sent {} descriptors", names.len(), fds.len());
        }
        Ok(Held { objects: names.into_iter().zip(fds).collect() })
    }

    /// Hands the keeper duplicates of `objects`, replacing what it held.
    pub fn deposit(&self, objects: &[(&str, BorrowedFd<'_>)]) -> Result<Deposit> {
        let names: Vec<&str> = objects.iter().map(|(name, _)| *name).collect();
        let fds: Vec<BorrowedFd<'_>> = objects.iter().map(|(_, fd)| fd.as_fd()).collect();
        let (text, _) = self.request(&format!("PUT {}", names.join(" ")), &fds)?;
        match text.as_str() {
            "OK" => Ok(Deposit::Kept),
            "DETACH" => Ok(Deposit::Detach),
            other => bail!("the state keeper refused the datapath: {other}"),
        }
    }

    /// Makes the keeper close everything it holds and tell its watchers.
    /// Returns how many objects it let go.
    pub fn drop_all(&self) -> Result<usize> {
        let (text, _) = self.request("DROP", &[])?;
        text.strip_prefix("DROPPED ")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("unexpected answer from the state keeper: {text:?}"))
    }

    /// A connection on which the keeper says `DETACH` after a `DROP`.
    pub fn watch(&self) -> Result<OwnedFd> {
        let sock = wire::connect(&self.path)
            .with_context(|| format!("connecting to the state keeper at {}", self.path.display()))?;
        wire::send(&sock, "WATCH", &[]).context("sending to the state keeper")?;
        Ok(sock)
    }
}
