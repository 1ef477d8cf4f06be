//! Small UDP packets per second, counted where they arrive.
//!
//! - `udp-rate recv --bind ADDR:PORT [--idle-ms MS] [--wait-secs S]`: prints
//!   `udp-rate ready` on stderr once bound, waits up to S seconds for the
//!   first datagram, counts until none has come for MS milliseconds, then
//!   prints one JSON line on stdout and exits:
//!   `{"received":N,"bytes":B,"secs":T,"per_second":R}` (T from the first
//!   to the last datagram).
//! - `udp-rate send --connect ADDR:PORT [--size BYTES] [--secs T]`: sends
//!   datagrams of BYTES payload bytes (64 by default) as fast as one thread
//!   can for T seconds, then prints
//!   `{"sent":N,"send_errors":E,"secs":T,"per_second":R}`.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use egress_tests::load::flags::Flags;

const USAGE: &str = "usage: udp-rate recv --bind ADDR:PORT [--idle-ms MS] [--wait-secs S]
       udp-rate send --connect ADDR:PORT [--size BYTES] [--secs T]";
/// Receive buffer, so a scheduling hiccup of the receiver is not counted as
/// path loss.
const RECV_BUFFER_BYTES: libc::c_int = 8 << 20;

fn main() {
    let flags = Flags::from_env("udp-rate", USAGE);
    match flags.mode.as_str() {
        "recv" => receive(
            &flags,
            flags.require("bind"),
            Duration::from_millis(flags.get("idle-ms", 300)),
            Duration::from_secs_f64(flags.get("wait-secs", 10.0)),
        ),
        "send" => send(
            &flags,
            flags.require("connect"),
            flags.get("size", 64usize),
            Duration::from_secs_f64(flags.get("secs", 10.0)),
        ),
        other => flags.fail_usage(&format!("unknown mode {other:?}")),
    }
}

fn receive(flags: &Flags, bind: SocketAddr, idle: Duration, wait: Duration) {
    let sock = UdpSocket::bind(bind).unwrap_or_else(|e| flags.fail(&format!("bind {bind}: {e}")));
    force_receive_buffer(&sock);
    eprintln!("udp-rate ready on {bind}");
    let mut buf = [0u8; 2048];
    sock.set_read_timeout(Some(wait)).expect("non-zero timeout");
    let (mut received, mut bytes) = (0u64, 0u64);
    let (mut first, mut last) = (None::<Instant>, Instant::now());
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                last = Instant::now();
                if first.is_none() {
                    first = Some(last);
                    sock.set_read_timeout(Some(idle)).expect("non-zero timeout");
                }
                received += 1;
                bytes += n as u64;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                break
            }
            Err(e) => flags.fail(&format!("recv: {e}")),
        }
    }
    let secs = first.map(|f| (last - f).as_secs_f64()).unwrap_or(0.0);
    let per_second = if secs > 0.0 { received as f64 / secs } else { 0.0 };
    let result =
        serde_json::json!({"received": received, "bytes": bytes, "secs": secs, "per_second": per_second});
    println!("{result}");
}

/// SO_RCVBUFFORCE (root) so the buffer is not capped by `rmem_max`; falls
/// back to the capped SO_RCVBUF.
fn force_receive_buffer(sock: &UdpSocket) {
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        let size = RECV_BUFFER_BYTES;
        // SAFETY: setsockopt with a valid fd and a c_int option value.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                &size as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

fn send(flags: &Flags, target: SocketAddr, size: usize, duration: Duration) {
    let local: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("literal");
    let sock = UdpSocket::bind(local).unwrap_or_else(|e| flags.fail(&format!("bind: {e}")));
    sock.connect(target).unwrap_or_else(|e| flags.fail(&format!("connect {target}: {e}")));
    let payload = vec![0x55u8; size];
    let (mut sent, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    'outer: loop {
        // Check the clock once per batch, not per datagram.
        for _ in 0..256 {
            match sock.send(&payload) {
                Ok(_) => sent += 1,
                // ICMP errors from earlier datagrams and full queues are
                // reported on later sends: count them and keep sending.
                Err(_) => errors += 1,
            }
        }
        if start.elapsed() >= duration {
            break 'outer;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let result = serde_json::json!({"sent": sent, "send_errors": errors, "secs": secs, "per_second": sent as f64 / secs});
    println!("{result}");
}
