//! `join --follow --replicas NAME`: the sidecar points the pod's tunnel at
//! one gateway replica itself, instead of leaving the choice to the tunnel
//! Service, and moves it within a fraction of a second when that replica
//! stops answering.
//!
//! - The ready replicas come from a headless Service's DNS name (ready pods
//!   only; no API access, no RBAC for the worker).
//! - The worker probes the replica its tunnel points at every
//!   `PROBE_INTERVAL`, through the tunnel (see `probe`).
//! - No genuine answer for `MISS_LIMIT` (`FIRST_ANSWER_LIMIT` until the
//!   first answer since start): the replica is passed over for a while and the tunnel moves to the worker's next choice at once (one
//!   netlink change of the device's remote; the routes stay). The pod's
//!   connections through the tunnel were on the dead replica and cannot
//!   survive: they are aborted at once (`connections`), so the application sees
//!   an error now rather than a hang.
//! - While its replica answers, a worker moves to its rendezvous choice
//!   (`replicas`) only when it has no connection through the tunnel, so
//!   evening out the spread never breaks a connection; the pod's packets
//!   into the tunnel wait for the instant of the last look and the switch
//!   (`Tunnel::switch_if`), so none opens unseen in between.
//! - A replica that is terminating marks its answers (`egress-agent
//!   drain`): it is passed over like one that missed, but nothing is
//!   aborted; the worker moves at its first idle moment, while the replica
//!   goes on forwarding the connections it holds.
//! - With no replica to choose (the name does not resolve, or every one
//!   missed), the tunnel goes back to the Service, which is where `join`
//!   points it first.
use std::{
    net::{Ipv4Addr, ToSocketAddrs},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Result;

use super::{
    connections,
    probe::{Answer, Prober},
    replicas::Replicas,
};
use crate::cli::JoinArgs;

/// How often the worker probes its replica.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// No genuine answer for this long and the replica is taken as gone:
/// three probes in a row lost.
pub const MISS_LIMIT: Duration = Duration::from_millis(300);
/// Until the first answer ever, a replica gets this long: a new pod's
/// sidecar may start before the replicas list the pod (the gateways' watch
/// takes a moment), and passing every replica over for that would be wrong.
pub const FIRST_ANSWER_LIMIT: Duration = Duration::from_secs(3);
/// How often the headless Service's name is resolved.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(1);

/// Where the tunnel points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The tunnel Service's address: kube-proxy picks the replica.
    Service,
    Replica(Ipv4Addr),
}

/// What the tunnel device needs to be pointed somewhere else, in two
/// steps: whatever may take a while first, then the switch itself.
pub trait Tunnel {
    /// Makes `to` reachable (its route); returns the address to switch to.
    fn prepare(&mut self, to: Target) -> Result<Ipv4Addr>;
    /// Points the tunnel at `remote`, prepared before.
    fn switch(&mut self, remote: Ipv4Addr) -> Result<()>;
    /// Points the tunnel at `remote` if `still_idle` says so, with what the
    /// pod sends into the tunnel held from before the question until after
    /// the switch: a connection opened at that moment is either seen by
    /// the question (and nothing moves) or leaves entirely by the new
    /// replica. Without the hold its SYN could reach one replica and the
    /// rest of it the other, which has no binding for it. Whether it moved.
    fn switch_if(&mut self, remote: Ipv4Addr, still_idle: &mut dyn FnMut() -> bool) -> Result<bool>;
    /// What the tunnel points at now.
    fn target(&self) -> Result<Target>;
}

pub struct Steering<T: Tunnel> {
    tunnel: T,
    target: Target,
    prober: Prober,
    replicas: Replicas,
    resolved: mpsc::Receiver<Vec<Ipv4Addr>>,
    cluster: Vec<(Ipv4Addr, u8)>,
    /// The first probe sent to the current target: answers to earlier ones
    /// came from another replica.
    first_sequence: u16,
    /// The current target's latest genuine answer, or when it became the
    /// target.
    answered_at: Instant,
    /// Whether any target has answered since the sidecar started.
    ever_answered: bool,
}

impl<T: Tunnel> Steering<T> {
    pub fn start(
        args: &JoinArgs,
        name: &str,
        worker: Ipv4Addr,
        cluster: Vec<(Ipv4Addr, u8)>,
        tunnel: T,
    ) -> Result<Self> {
        let prober = Prober::open(&args.device)?;
        let target = tunnel.target()?;
        let first_sequence = prober.next_sequence();
        Ok(Steering {
            tunnel,
            target,
            prober,
            replicas: Replicas::new(worker),
            resolved: resolve_every(name.to_string(), RESOLVE_INTERVAL),
            cluster,
            first_sequence,
            answered_at: Instant::now(),
            ever_answered: false,
        })
    }

    /// One probe period: read answers and the latest DNS answer, move if
    /// the replica is gone (or if the pod is idle and another replica is
    /// its choice), then probe.
    pub fn tick(&mut self, now: Instant) {
        while let Ok(ready) = self.resolved.try_recv() {
            self.replicas.set_ready(ready);
        }
        let first = self.first_sequence;
        let answers: Vec<Answer> =
            self.prober.answers().into_iter().filter(|a| a.sequence.wrapping_sub(first) < 0x8000).collect();
        if !answers.is_empty() {
            self.answered_at = now;
            self.ever_answered = true;
        }
        if let (Target::Replica(leaving), true) = (self.target, answers.iter().any(|a| a.draining)) {
            if self.replicas.pass_over(leaving, now) {
                println!("replica {leaving} is draining: the tunnel moves as soon as the pod has no connection through it");
            }
        }
        let silent = now.duration_since(self.answered_at);
        let limit = if self.ever_answered { MISS_LIMIT } else { FIRST_ANSWER_LIMIT };
        if silent > limit {
            if let Target::Replica(gone) = self.target {
                self.replicas.pass_over(gone, now);
            }
            let next = self.choice(now);
            if next != self.target {
                println!(
                    "replica {} has not answered for {} ms: moving the tunnel to {}",
                    describe(self.target),
                    silent.as_millis(),
                    describe(next)
                );
                self.move_to(next, now, false);
                let aborted = connections::abort_through_the_tunnel(&self.cluster);
                match aborted {
                    Ok(0) => {}
                    Ok(n) => println!("aborted {n} connections that were on the replica that is gone"),
                    Err(err) => eprintln!("egress-agent: warning: {err:#}"),
                }
            }
        } else {
            let best = self.choice(now);
            if best != self.target && best != Target::Service && idle(&self.cluster) {
                let from = self.target;
                if self.move_to(best, now, true) {
                    println!("moved the idle tunnel from {} to {}", describe(from), describe(best));
                }
            }
        }
        if let Err(err) = self.prober.send() {
            eprintln!("egress-agent: error: {err:#}");
        }
    }

    fn choice(&mut self, now: Instant) -> Target {
        self.replicas.choice(now).map_or(Target::Service, Target::Replica)
    }

    /// Points the tunnel at `to`; with `only_if_idle`, only if the pod
    /// still has no connection through it at the switch. Whether it moved.
    fn move_to(&mut self, to: Target, now: Instant, only_if_idle: bool) -> bool {
        let cluster = &self.cluster;
        let tunnel = &mut self.tunnel;
        let moved = tunnel.prepare(to).and_then(|remote| match only_if_idle {
            true => tunnel.switch_if(remote, &mut || idle(cluster)),
            false => tunnel.switch(remote).map(|()| true),
        });
        match moved {
            Ok(true) => {
                self.target = to;
                self.first_sequence = self.prober.next_sequence();
                self.answered_at = now;
                true
            }
            Ok(false) => false,
            Err(err) => {
                eprintln!("egress-agent: error: moving the tunnel to {}: {err:#} (retrying)", describe(to));
                false
            }
        }
    }
}

/// Whether the pod has no TCP connection through the tunnel (a failed
/// look counts as not idle: nothing moves on a guess).
fn idle(cluster: &[(Ipv4Addr, u8)]) -> bool {
    connections::through_the_tunnel(cluster).is_ok_and(|c| c.is_empty())
}

fn describe(target: Target) -> String {
    match target {
        Target::Service => "the tunnel Service".to_string(),
        Target::Replica(ip) => ip.to_string(),
    }
}

/// Resolves `name` on its own thread every `interval` (a resolver that
/// waits for an unreachable DNS server must not hold up the probes) and
/// sends each answer's IPv4 addresses, sorted; a failure is reported once
/// until the name resolves again, and sends nothing.
fn resolve_every(name: String, interval: Duration) -> mpsc::Receiver<Vec<Ipv4Addr>> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let mut failing = false;
        loop {
            match (name.as_str(), 0).to_socket_addrs() {
                Ok(addrs) => {
                    let mut ready: Vec<Ipv4Addr> = addrs
                        .filter_map(|a| match a {
                            std::net::SocketAddr::V4(v4) => Some(*v4.ip()),
                            _ => None,
                        })
                        .collect();
                    ready.sort();
                    ready.dedup();
                    failing = false;
                    if send.send(ready).is_err() {
                        return;
                    }
                }
                Err(err) if !failing => {
                    eprintln!(
                        "egress-agent: warning: cannot resolve --replicas {name:?} ({err}): is the headless Service deployed? The tunnel stays where it is"
                    );
                    failing = true;
                }
                Err(_) => {}
            }
            std::thread::sleep(interval);
        }
    });
    receive
}
