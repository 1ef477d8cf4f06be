//! `egress-agent keep`: the state keeper itself (see the module above).
//! One thread per connection; every request is answered at once, so a
//! thread lives only as long as one exchange, except a watcher's, whose
//! socket is kept in the state until a `DROP`.
use std::{
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result};

use super::wire;
use crate::cli::KeepArgs;

#[derive(Default)]
struct State {
    held: Vec<(String, OwnedFd)>,
    /// Counts `CLAIM`s: the agent that claimed the datapath last owns it,
    /// and a `PUT` from any earlier one is refused.
    epoch: u64,
    /// Where this keeper's epochs start (random): an epoch outside
    /// `first_epoch..=epoch` was given by an earlier keeper, and its agent
    /// is told to claim again (`UNKNOWN`), not that it was superseded.
    first_epoch: u64,
    /// A `DROP` came and no agent has claimed the datapath since.
    detached: bool,
    watchers: Vec<OwnedFd>,
}

/// Exits at once on SIGTERM/SIGINT (the keeper is PID 1 in its container,
/// where the kernel ignores signals without a handler): closing what it
/// holds is exactly what stopping the pod should do.
extern "C" fn exit_now(_signal: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(0) }
}

pub fn run(args: KeepArgs) -> Result<()> {
    let handler = exit_now as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing a handler that only calls _exit.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
    if let Some(dir) = args.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener = wire::listen(&args.socket)
        .with_context(|| format!("listening on {} (is the volume writable?)", args.socket.display()))?;
    tracing::info!(socket = %args.socket.display(), "state keeper listening");
    let first_epoch = random_start();
    let state = Arc::new(Mutex::new(State { epoch: first_epoch, first_epoch, ..State::default() }));
    loop {
        let conn = match wire::accept(&listener) {
            Ok(conn) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("accepting a connection"),
        };
        let state = state.clone();
        std::thread::spawn(move || {
            if let Err(err) = serve(conn, &state) {
                tracing::warn!("state keeper connection: {err:#}");
            }
        });
    }
}

fn serve(conn: OwnedFd, state: &Mutex<State>) -> Result<()> {
    let Some((text, fds)) = wire::recv(&conn, true)? else { return Ok(()) };
    let mut words = text.split_whitespace();
    let verb = words.next().unwrap_or("");
    let mut state = state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match verb {
        "GET" => {
            let names: Vec<&str> = state.held.iter().map(|(n, _)| n.as_str()).collect();
            let fds: Vec<BorrowedFd<'_>> = state.held.iter().map(|(_, fd)| fd.as_fd()).collect();
            wire::send(&conn, format!("HELD {} {}", state.epoch, names.join(" ")).trim_end(), &fds)?;
        }
        "CLAIM" => match words.next().and_then(|w| w.parse::<u64>().ok()) {
            // Nobody claimed since the caller's GET: it owns the datapath
            // now, and whatever detach said before is over.
            Some(seen) if seen == state.epoch => {
                state.epoch += 1;
                state.detached = false;
                wire::send(&conn, &format!("OWNER {}", state.epoch), &[])?;
            }
            Some(seen) if (state.first_epoch..state.epoch).contains(&seen) => {
                wire::send(&conn, "SUPERSEDED", &[])?
            }
            _ => wire::send(&conn, "UNKNOWN", &[])?,
        },
        "PUT" => {
            let epoch: Option<u64> = words.next().and_then(|w| w.parse().ok());
            let names: Vec<String> = words.map(str::to_string).collect();
            if names.len() != fds.len() {
                wire::send(
                    &conn,
                    &format!("ERROR {} names for {} descriptors", names.len(), fds.len()),
                    &[],
                )?;
            } else if epoch.is_some_and(|e| (state.first_epoch..state.epoch).contains(&e)) {
                wire::send(&conn, "SUPERSEDED", &[])?;
            } else if epoch != Some(state.epoch) {
                wire::send(&conn, "UNKNOWN", &[])?;
            } else if state.detached {
                wire::send(&conn, "DETACH", &[])?;
            } else {
                if names.len() != state.held.len() {
                    tracing::info!(objects = %names.join(" "), "holding the datapath");
                }
                state.held = names.into_iter().zip(fds).collect();
                wire::send(&conn, "OK", &[])?;
            }
        }
        "WATCH" => {
            // Agents killed since their WATCH left closed sockets behind.
            state.watchers.retain(|w| !matches!(wire::recv(w, false), Ok(None)));
            state.watchers.push(conn);
        }
        "DROP" => {
            let dropped = std::mem::take(&mut state.held).len();
            state.detached = true;
            let mut told = 0;
            for watcher in std::mem::take(&mut state.watchers) {
                // A watcher that has gone away is simply forgotten.
                if wire::send(&watcher, "DETACH", &[]).is_ok() {
                    told += 1;
                }
            }
            tracing::info!(objects = dropped, agents = told, "dropped the datapath on request");
            wire::send(&conn, &format!("DROPPED {dropped} {told}"), &[])?;
        }
        other => wire::send(&conn, &format!("ERROR unknown request {other:?}"), &[])?,
    }
    Ok(())
}

/// A start for this keeper's epochs that an earlier keeper's are unlikely
/// to fall after (the clock's nanoseconds and the pid, in the top bits;
/// claims count up from there).
fn random_start() -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ ((std::process::id() as u64) << 40)) & !0xffff_ffff | 1
}
