//! A static list of client addresses in a file, re-read when it changes:
//! for the local demo, tests, and container hosts without Kubernetes.
//!
//! Format: one client a line: its IPv4 address, optionally followed by
//! its IPv6 address (a dual-stack pod's), or the IPv6 address of a pod
//! without IPv4 (an IPv6-only cluster's); then a name, separated by
//! whitespace. Blank lines and `#` comments are ignored. A changed name is
//! a new client (its flows start over); a changed IPv6 address moves only
//! the IPv6 flows.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv6Addr},
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
    // Which line holds each IPv6 address, and as whose.
    let mut ipv6_owners: BTreeMap<Ipv6Addr, (IpAddr, usize)> = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let addr = fields.next().unwrap_or_default();
        let Ok(ip) = addr.parse::<IpAddr>() else {
            bail!("line {}: {addr:?} is not an IP address", number + 1);
        };
        let mut fields = fields.peekable();
        // After an IPv4 address, a second word that is an IPv6 address is
        // one; anything else begins the name (names may hold a colon).
        let ipv6: Option<Ipv6Addr> = match ip {
            IpAddr::V4(_) => fields
                .next_if(|field| field.parse::<Ipv6Addr>().is_ok())
                .map(|field| field.parse().expect("parsed above")),
            IpAddr::V6(_) => None,
        };
        let listed = match ip {
            IpAddr::V6(address) => Some(address),
            IpAddr::V4(_) => ipv6,
        };
        if let Some(ipv6) = listed {
            if !crate::netdev::is_global_unicast(&ipv6) {
                bail!(
                    "line {}: {ipv6} is not a pod's address (unspecified, loopback, link-local or multicast)",
                    number + 1
                );
            }
            match ipv6_owners.insert(ipv6, (ip, number + 1)) {
                Some((other, first)) if other != ip => bail!(
                    "line {}: {ipv6} is line {first}'s already: give each client its own IPv6 address",
                    number + 1
                ),
                _ => {}
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
    fn rejects_a_shared_or_link_local_ipv6_address_with_its_line() {
        let err = parse("10.0.0.1 fe80::1 web\n").unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("not a pod's address"), "{err}");
        let err = parse("10.0.0.1 fd00::1\n10.0.0.2 fd00::1\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("line 1's"), "{err}");
        // The same line twice is no conflict; a name with a colon is a name.
        let s = parse("10.0.0.1 fd00::1 web\n10.0.0.1 fd00::1 web\n10.0.0.2 ns:job 7\n").unwrap();
        assert_eq!(s.len(), 2);
        let job = &s[&"10.0.0.2".parse().unwrap()];
        assert_eq!((job.ipv6, job.name.as_str()), (None, "ns:job 7"));
    }

    /// A pod of an IPv6-only cluster is listed by its IPv6 address; it
    /// cannot also be another line's second address.
    #[test]
    fn a_line_may_list_a_pod_by_its_ipv6_address_alone() {
        let s = parse(
            "fd00::5 v6-only
fd00::6 fd00::7 a name
10.0.0.1 fd00::8 web
",
        )
        .unwrap();
        let pod = &s[&"fd00::5".parse().unwrap()];
        assert_eq!((pod.ipv6, pod.name.as_str()), (None, "v6-only"), "its one address is the key");
        let named = &s[&"fd00::6".parse().unwrap()];
        assert_eq!((named.ipv6, named.name.as_str()), (None, "fd00::7 a name"), "no second address");
        let err = parse(
            "10.0.0.1 fd00::5 web
fd00::5 other
",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 2") && err.contains("line 1's"), "{err}");
        let err = parse(
            "fe80::5 v6-only
",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 1") && err.contains("not a pod's address"), "{err}");
    }

    #[test]
    fn rejects_bad_line_with_its_number() {
        let err = parse("10.0.0.1\n10.0.0.300\n").unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
