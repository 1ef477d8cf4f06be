//! TCP request/response latency: 1-byte ping-pong on one connection.
//!
//! - `tcp-rr serve --bind ADDR:PORT [--cpu N]`: echoes whatever each
//!   connection sends (TCP_NODELAY, one thread per connection). Prints
//!   `tcp-rr ready` on stderr once it listens.
//! - `tcp-rr run --connect ADDR:PORT [--secs T] [--warmup N] [--cpu N]`:
//!   sends one byte, waits for it to come back, and again, for T seconds;
//!   the first N exchanges (200 by default) are not counted. Prints one
//!   JSON line: `{"count":N,"median_us":M,"p90_us":..,"p99_us":..,"mean_us":..}`.
//!
//! `--cpu N` pins the process to CPU N. Client and server on one CPU
//! measure the work of a round trip through the path; on two CPUs, each
//! exchange also pays two cross-CPU wake-ups (which in a VM cost more than
//! the path itself).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use egress_tests::load::flags::Flags;

const USAGE: &str = "usage: tcp-rr serve --bind ADDR:PORT [--cpu N]
       tcp-rr run --connect ADDR:PORT [--secs T] [--warmup N] [--cpu N]";
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    let flags = Flags::from_env("tcp-rr", USAGE);
    if let Some(cpu) = flags.optional("cpu") {
        pin_to_cpu(&flags, cpu);
    }
    match flags.mode.as_str() {
        "serve" => serve(&flags, flags.require("bind")),
        "run" => run(
            &flags,
            flags.require("connect"),
            Duration::from_secs_f64(flags.get("secs", 5.0)),
            flags.get("warmup", 200usize),
        ),
        other => flags.fail_usage(&format!("unknown mode {other:?}")),
    }
}

/// Pins the whole process (it is single-threaded at this point, and threads
/// inherit the mask) to `cpu`.
fn pin_to_cpu(flags: &Flags, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes inside it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        flags.fail(&format!("pinning to CPU {cpu}: {}", std::io::Error::last_os_error()));
    }
}

fn serve(flags: &Flags, bind: SocketAddr) {
    let listener = TcpListener::bind(bind).unwrap_or_else(|e| flags.fail(&format!("bind {bind}: {e}")));
    eprintln!("tcp-rr ready on {bind}");
    for stream in listener.incoming().flatten() {
        thread::spawn(move || {
            let _ = echo(stream);
        });
    }
}

fn echo(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = [0u8; 64];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

fn run(flags: &Flags, target: SocketAddr, duration: Duration, warmup: usize) {
    let mut stream = TcpStream::connect_timeout(&target, IO_TIMEOUT)
        .unwrap_or_else(|e| flags.fail(&format!("connect {target}: {e}")));
    stream.set_nodelay(true).expect("TCP_NODELAY");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("non-zero timeout");
    let mut byte = [1u8];
    let mut samples_ns: Vec<u64> = Vec::with_capacity(1 << 20);
    let start = Instant::now();
    let mut exchanges = 0usize;
    while start.elapsed() < duration {
        let sent_at = Instant::now();
        stream.write_all(&byte).unwrap_or_else(|e| flags.fail(&format!("write: {e}")));
        stream.read_exact(&mut byte).unwrap_or_else(|e| flags.fail(&format!("read: {e}")));
        let rtt = sent_at.elapsed();
        exchanges += 1;
        if exchanges > warmup {
            samples_ns.push(rtt.as_nanos() as u64);
        }
    }
    if samples_ns.is_empty() {
        flags.fail(&format!("only {exchanges} exchanges in {duration:?}, none after the warm-up"));
    }
    samples_ns.sort_unstable();
    let at = |q: f64| samples_ns[((samples_ns.len() - 1) as f64 * q).round() as usize] as f64 / 1e3;
    let mean_us = samples_ns.iter().sum::<u64>() as f64 / samples_ns.len() as f64 / 1e3;
    let result = serde_json::json!({
        "count": samples_ns.len(),
        "median_us": at(0.5),
        "p90_us": at(0.9),
        "p99_us": at(0.99),
        "mean_us": mean_us,
    });
    println!("{result}");
}
