//! UDP datagrams of a known pattern, for the tests of big datagrams (both
//! families): a server answering every request with `reply_len` bytes of
//! [`pattern`], and a client that asks and waits.
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use egress_tests::Netns;

/// `len` bytes counting modulo 251: a prime, so a fragment put back at the
/// wrong offset (offsets are multiples of 8) or a lost one shows as a
/// mismatch, not as a coincidental repeat.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

pub fn assert_pattern(what: &str, bytes: &[u8], len: usize) {
    assert_eq!(bytes.len(), len, "{what}: length");
    if let Some(at) = bytes.iter().zip(pattern(len)).position(|(got, want)| *got != want) {
        panic!("{what}: corrupt from byte {at}");
    }
}

/// Whether the server's answers may leave with DF set.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ServerDf {
    /// Linux's default (IP_PMTUDISC_WANT): DF on whatever fits the route's
    /// MTU, local fragmentation (without DF) of the rest.
    LinuxDefault,
    /// IP_PMTUDISC_DONT: never DF (DNS servers commonly turn path MTU
    /// discovery off for UDP). IPv4 only.
    Clear,
}

/// A UDP server in the outside namespace answering every datagram with
/// `reply_len` bytes of [`pattern`], on its own thread; it keeps what it
/// received for the scenario to check. Stopped on drop too, so a failing
/// client never leaves it running.
pub struct PatternServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Vec<u8>>>>,
}

impl PatternServer {
    pub fn start(
        outside: &Netns,
        at: impl Into<SocketAddr>,
        df: ServerDf,
        reply_len: usize,
    ) -> PatternServer {
        let at = at.into();
        let socket = outside
            .run(move || {
                let socket = UdpSocket::bind(at)?;
                if df == ServerDf::Clear {
                    clear_df(&socket)?;
                }
                // Short, so the thread sees `stop` soon.
                socket.set_read_timeout(Some(Duration::from_millis(100)))?;
                Ok(socket)
            })
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let reply = pattern(reply_len);
            let mut requests = Vec::new();
            let mut buf = vec![0u8; 1 << 16];
            while !stopped.load(Ordering::Relaxed) {
                match socket.recv_from(&mut buf) {
                    Ok((len, from)) => {
                        socket.send_to(&reply, from).unwrap_or_else(|e| panic!("answering {from}: {e}"));
                        requests.push(buf[..len].to_vec());
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("the server at {at} failed to receive: {e}"),
                }
            }
            requests
        });
        PatternServer { stop, thread: Some(thread) }
    }

    /// Stops the server; returns every request it received, in order.
    pub fn stop(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("stopped once");
        thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

impl Drop for PatternServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// IP_MTU_DISCOVER = IP_PMTUDISC_DONT: nothing this socket sends has DF
/// (IPv4: IPv6 has no DF, its senders fragment what the path cannot carry).
fn clear_df(socket: &UdpSocket) -> std::io::Result<()> {
    let dont: libc::c_int = libc::IP_PMTUDISC_DONT;
    // SAFETY: setsockopt on a socket we own, with a c_int value and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            &dont as *const libc::c_int as *const libc::c_void,
            std::mem::size_of_val(&dont) as libc::socklen_t,
        )
    };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Sends `request` from a fresh connected socket in `client` (only the
/// server's answer is accepted) and waits `wait` for the answer, up to
/// `tries` times. Returns the answer and the try (from 1) that got it.
pub fn ask(
    client: &Netns,
    server: impl Into<SocketAddr>,
    request: &[u8],
    wait: Duration,
    tries: u32,
) -> Option<(Vec<u8>, u32)> {
    let server = server.into();
    let any = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = client.run(move || Ok(UdpSocket::bind(any)?)).unwrap();
    socket.connect(server).unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    for attempt in 1..=tries {
        socket.send(request).unwrap();
        if let Ok(len) = socket.recv(&mut buf) {
            return Some((buf[..len].to_vec(), attempt));
        }
    }
    None
}

/// A client sends to a UDP server at `at` and closes its socket; the
/// server, now connected to where the datagram came from (the gateway's
/// NAT port), answers late. Returns what the server's next receive says:
/// the client's port unreachable, translated on, is "connection refused".
pub fn late_reply_to_a_closed_socket(
    outside: &Netns,
    at: impl Into<SocketAddr>,
    client: &Netns,
) -> std::io::Result<usize> {
    let at = at.into();
    let socket = outside.run(move || Ok(UdpSocket::bind(at)?)).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let any = if at.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sender = client.run(move || Ok(UdpSocket::bind(any)?)).unwrap();
    sender.send_to(b"hello", at).unwrap();
    let mut buf = [0u8; 64];
    let (_, from) = socket.recv_from(&mut buf).expect("the datagram reached the server");
    drop(sender);
    socket.connect(from).unwrap();
    socket.send(b"a late answer").unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    socket.recv(&mut buf)
}
