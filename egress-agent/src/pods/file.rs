//! A static list of client addresses in a file, re-read when it changes:
//! for the local demo, tests, and container hosts without Kubernetes.
//!
//! Format: one IPv4 address a line, optionally followed by the client's
//! IPv6 address (a dual-stack pod's) and a name, separated by whitespace;
//! blank lines and `#` comments are ignored. A changed line is a new
//! client: its flows start over.
use std::{
    path::PathBuf,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use anyhow::{bail, Context, Result};

use super::{unix_now_s, ClientIdentity, ClientSnapshot, PodSource, SourceHealth, SourceState};

/// How often the file is checked. Edits take effect within this interval.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// Opens the source, refusing a file that cannot be read or parsed now:
    /// a gateway must not start with a client list it cannot know.
    pub fn open(path: PathBuf) -> Result<(FileSource, ClientSnapshot)> {
        let snapshot = read_snapshot(&path)?;
        Ok((FileSource { path }, snapshot))
    }
}

pub fn parse(text: &str) -> Result<ClientSnapshot> {
    let mut clients = ClientSnapshot::new();
    let mut ipv6_lines: std::collections::BTreeMap<std::net::Ipv6Addr, usize> = Default::default();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let addr = fields.next().unwrap_or_default();
        let Ok(ip) = addr.parse() else {
            bail!("line {}: {addr:?} is not an IPv4 address", number + 1);
        };
        let mut fields = fields.peekable();
        let ipv6 = fields.next_if(|field| field.contains(':')).map(|field| match field.parse() {
            Ok(ipv6) => Ok(ipv6),
            Err(_) => Err(anyhow::anyhow!("line {}: {field:?} is not an IPv6 address", number + 1)),
        });
        let ipv6 = ipv6.transpose()?;
        if let Some(ipv6) = ipv6 {
            if let Some(first) = ipv6_lines.insert(ipv6, number + 1) {
                bail!(
                    "line {}: {ipv6} is line {first}'s already: give each client its own IPv6 address",
                    number + 1
                );
            }
        }
        let name = fields.collect::<Vec<_>>().join(" ");
        clients.insert(ip, ClientIdentity { name, uid: String::new(), ipv6 });
    }
    Ok(clients)
}

fn read_snapshot(path: &PathBuf) -> Result<ClientSnapshot> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read pods file {}: check --pods-file", path.display()))?;
    parse(&text).with_context(|| format!("pods file {}", path.display()))
}

impl PodSource for FileSource {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn run(
        self: Box<Self>,
        updates: tokio::sync::watch::Sender<Option<ClientSnapshot>>,
        health: Arc<SourceHealth>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            // The snapshot read by `open` is the first complete list.
            health.synced.store(true, Ordering::Relaxed);
            health.relists.fetch_add(1, Ordering::Relaxed);
            health.last_sync_unix_s.store(unix_now_s(), Ordering::Relaxed);
            health.set_state(SourceState::Watching);
            let mut last_error: Option<String> = None;
            loop {
                tokio::time::sleep(POLL_INTERVAL).await;
                if updates.is_closed() {
                    return;
                }
                // Content, not mtime, decides: editors and ConfigMap symlink
                // swaps do not always move the mtime forward.
                match read_snapshot(&self.path) {
                    Ok(snapshot) => {
                        last_error = None;
                        health.set_state(SourceState::Watching);
                        health.last_sync_unix_s.store(unix_now_s(), Ordering::Relaxed);
                        updates.send_if_modified(|current| {
                            if current.as_ref() == Some(&snapshot) {
                                false
                            } else {
                                *current = Some(snapshot);
                                true
                            }
                        });
                    }
                    Err(err) => {
                        // Keep the last good list; say so once per distinct error.
                        let text = format!("{err:#}");
                        if health.record_error(&mut last_error, text.clone()) {
                            tracing::warn!("keeping the current client list: {text}");
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_names_comments() {
        let s = parse("# clients\n10.0.0.1 web-1\n\n  10.0.0.2   # no name\n10.0.0.3 job a\n").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[&"10.0.0.1".parse().unwrap()].name, "web-1");
        assert_eq!(s[&"10.0.0.2".parse().unwrap()].name, "");
        assert_eq!(s[&"10.0.0.3".parse().unwrap()].name, "job a");
    }

    #[test]
    fn a_line_may_give_the_client_s_ipv6_address_before_its_name() {
        let s = parse("10.0.0.1 fd00::1 web-1\n10.0.0.2 fd00::2\n10.0.0.3 job\n").unwrap();
        let client = |ip: &str| &s[&ip.parse().unwrap()];
        assert_eq!(client("10.0.0.1").ipv6, Some("fd00::1".parse().unwrap()));
        assert_eq!(client("10.0.0.1").name, "web-1");
        assert_eq!(client("10.0.0.2").ipv6, Some("fd00::2".parse().unwrap()));
        assert_eq!((client("10.0.0.3").ipv6, client("10.0.0.3").name.as_str()), (None, "job"));
    }

    #[test]
    fn rejects_a_bad_or_shared_ipv6_address_with_its_line() {
        let err = parse("10.0.0.1 fd00::zz web\n").unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("not an IPv6 address"), "{err}");
        let err = parse("10.0.0.1 fd00::1\n10.0.0.2 fd00::1\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("line 1's"), "{err}");
    }

    #[test]
    fn rejects_bad_line_with_its_number() {
        let err = parse("10.0.0.1\n10.0.0.300\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
