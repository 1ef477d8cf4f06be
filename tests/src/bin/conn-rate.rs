//! New TCP connections per second: short HTTP requests with
//! `Connection: close`, each on a fresh connection.
//!
//! - `conn-rate serve --bind ADDR:PORT [--ports N] [--threads N]`: listens on
//!   PORT..PORT+N-1 and answers every request with `HTTP/1.1 200` and the
//!   body `<client ip> <client port>\n` (the address it saw, like the echo
//!   server), then closes first, as HTTP servers do with `Connection:
//!   close`. A fixed pool of accept threads per port, so starting a thread is
//!   not part of every connection. Prints `conn-rate ready` on stderr once
//!   it listens.
//! - `conn-rate run --connect ADDR:PORT [--ports N] [--workers K] [--secs T] [--timeout-ms MS] [--rate R]`:
//!   K threads each loop connect → write the request → read to EOF for T
//!   seconds, spreading the connections over the N ports, then one JSON
//!   line on stdout:
//!   `{"connections":N,"errors":E,"secs":T,"per_second":R,"first_error":"..."}`.
//!
//! Why several ports: a NAT holds each closed connection's port for a while
//! (Linux conntrack: TIME_WAIT, 120 s), per destination. Thousands of
//! connections a second to one address and port run out of NAT ports within
//! seconds, and the run would then measure that limit instead of the cost of
//! a connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use egress_tests::load::flags::Flags;

const USAGE: &str = "usage: conn-rate serve --bind ADDR:PORT [--ports N] [--threads N]
       conn-rate run --connect ADDR:PORT [--ports N] [--workers K] [--secs T] [--timeout-ms MS] [--rate R]";
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
/// A server connection that sends nothing for this long is dropped.
const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let flags = Flags::from_env("conn-rate", USAGE);
    match flags.mode.as_str() {
        "serve" => serve(&flags, &ports(&flags, "bind"), flags.get("threads", 8usize).max(1)),
        "run" => run(
            ports(&flags, "connect"),
            flags.get("workers", 8usize).max(1),
            Duration::from_secs_f64(flags.get("secs", 10.0)),
            Duration::from_millis(flags.get("timeout-ms", 2000)),
            flags.get("rate", 0.0f64),
        ),
        other => flags.fail_usage(&format!("unknown mode {other:?}")),
    }
}

/// `--NAME ADDR:PORT` and `--ports N`: the N addresses PORT..PORT+N-1.
fn ports(flags: &Flags, name: &str) -> Vec<SocketAddr> {
    let first: SocketAddr = flags.require(name);
    let count: u16 = flags.get("ports", 1u16).max(1);
    if first.port().checked_add(count - 1).is_none() {
        flags.fail_usage(&format!("--ports {count} from port {} goes past 65535", first.port()));
    }
    (0..count).map(|i| SocketAddr::new(first.ip(), first.port() + i)).collect()
}

fn serve(flags: &Flags, binds: &[SocketAddr], threads_per_port: usize) {
    let mut handles = Vec::new();
    for &bind in binds {
        let listener = TcpListener::bind(bind).unwrap_or_else(|e| flags.fail(&format!("bind {bind}: {e}")));
        let listener = Arc::new(listener);
        for _ in 0..threads_per_port {
            let listener = Arc::clone(&listener);
            handles.push(thread::spawn(move || loop {
                if let Ok((stream, peer)) = listener.accept() {
                    let _ = answer(stream, peer);
                }
            }));
        }
    }
    eprintln!("conn-rate ready on {} port(s) from {}", binds.len(), binds[0]);
    for h in handles {
        let _ = h.join();
    }
}

/// Reads the request head, answers with the peer address, closes.
fn answer(mut stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    stream.set_read_timeout(Some(SERVER_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(SERVER_IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = format!("{} {}\n", peer.ip(), peer.port());
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
    // Dropping the stream closes it: the server sends the first FIN.
}

/// `rate`: connections per second started in total, 0 for as many as the
/// workers manage (each worker keeps its share of the pace).
fn run(targets: Vec<SocketAddr>, workers: usize, duration: Duration, timeout: Duration, rate: f64) {
    let pace = (rate > 0.0).then(|| Duration::from_secs_f64(workers as f64 / rate));
    let targets = Arc::new(targets);
    let stop = Arc::new(AtomicBool::new(false));
    let first_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|worker| {
            let stop = Arc::clone(&stop);
            let first_error = Arc::clone(&first_error);
            let targets = Arc::clone(&targets);
            thread::spawn(move || {
                let (mut done, mut errors) = (0u64, 0u64);
                // Each worker starts at another port and moves on by one.
                let mut next = worker;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(pace) = pace {
                        let due = start + pace.mul_f64((next - worker) as f64);
                        thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                    let target = targets[next % targets.len()];
                    next += 1;
                    match one_request(target, timeout) {
                        Ok(()) => done += 1,
                        Err(e) => {
                            errors += 1;
                            first_error.lock().unwrap().get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (done, errors)
            })
        })
        .collect();
    thread::sleep(duration);
    stop.store(true, Ordering::Relaxed);
    let (mut connections, mut errors) = (0u64, 0u64);
    for h in handles {
        let (done, failed) = h.join().unwrap_or((0, 0));
        connections += done;
        errors += failed;
    }
    // Requests in flight at the stop still complete and count, so the
    // window ends when the last worker returned.
    let secs = start.elapsed().as_secs_f64();
    let result = serde_json::json!({
        "connections": connections,
        "errors": errors,
        "secs": secs,
        "per_second": connections as f64 / secs,
        "first_error": first_error.lock().unwrap().clone().unwrap_or_default(),
    });
    println!("{result}");
}

fn one_request(target: SocketAddr, timeout: Duration) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(REQUEST)?;
    let mut response = Vec::with_capacity(256);
    stream.read_to_end(&mut response)?;
    if !response.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other("not an HTTP 200 response"));
    }
    Ok(())
}
