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
    /// A `DROP` came and no agent has started (`GET`) since.
    detached: bool,
    watchers: Vec<OwnedFd>,
}

pub fn run(args: KeepArgs) -> Result<()> {
    if let Some(dir) = args.socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener = wire::listen(&args.socket)
        .with_context(|| format!("listening on {} (is the volume writable?)", args.socket.display()))?;
    tracing::info!(socket = %args.socket.display(), "state keeper listening");
    let state = Arc::new(Mutex::new(State::default()));
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
            // An agent is starting: whatever detach said before is over.
            state.detached = false;
            let names: Vec<&str> = state.held.iter().map(|(n, _)| n.as_str()).collect();
            let fds: Vec<BorrowedFd<'_>> = state.held.iter().map(|(_, fd)| fd.as_fd()).collect();
            wire::send(&conn, format!("HELD {}", names.join(" ")).trim_end(), &fds)?;
        }
        "PUT" => {
            let names: Vec<String> = words.map(str::to_string).collect();
            if names.len() != fds.len() {
                wire::send(
                    &conn,
                    &format!("ERROR {} names for {} descriptors", names.len(), fds.len()),
                    &[],
                )?;
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
            for watcher in std::mem::take(&mut state.watchers) {
                // A watcher that has gone away is simply forgotten.
                let _ = wire::send(&watcher, "DETACH", &[]);
            }
            tracing::info!(objects = dropped, "dropped the datapath on request");
            wire::send(&conn, &format!("DROPPED {dropped}"), &[])?;
        }
        other => wire::send(&conn, &format!("ERROR unknown request {other:?}"), &[])?,
    }
    Ok(())
}
