//! Timing the real program with BPF_PROG_TEST_RUN.
//!
//! The kernel times a test run itself (net/bpf/test_run.c): it reads the
//! clock, runs the program `repeat` times on the same skb, reads the clock
//! again and reports the average. Two consequences shape everything here:
//!
//! - The skb is not reset between repetitions. Our program rewrites packets
//!   in place (a client packet loses its tunnel, a reply gains one), so from
//!   the second repetition on it sees its own output, which is no longer
//!   addressed to the gateway: it passes it to the stack. A `repeat` run of a
//!   translated packet measures one translation and N-1 "not ours" checks
//!   ([`Bench::naive_repeat`] shows it with the counters).
//! - With `repeat = 1` the reported duration also holds the clock reads
//!   around the single run. [`Calibration`] measures that overhead once,
//!   with a packet the program leaves untouched (so `repeat` is valid for
//!   it): per-run duration at repeat 1 minus the per-run duration at a large
//!   repeat. Every translated packet is then run once per call, and its
//!   duration minus that overhead is what a `repeat` run would report if
//!   the packet could be reset between repetitions.
use anyhow::{bail, Context, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use egress_agent::datapath::loader::Datapath;

/// One BPF_PROG_TEST_RUN call.
pub struct Run {
    pub action: u32,
    /// The kernel's duration: total time / repeat, in ns.
    pub duration_ns: u64,
    pub packet: Vec<u8>,
}

/// Which of the object's classifiers a run times.
#[derive(Clone, Copy)]
pub enum Program {
    /// The gateway's own (`egress_gateway`).
    Gateway,
    /// The floor: the tunnel work alone (`egress_tunnel_floor`).
    TunnelFloor,
}

impl Program {
    fn of(self, datapath: &mut Datapath) -> Result<&mut SchedClassifier> {
        match self {
            Program::Gateway => datapath.program(),
            Program::TunnelFloor => datapath.tunnel_floor(),
        }
    }
}

/// Runs the program of `datapath` on `packet` `repeat` times (one call).
pub fn run(datapath: &mut Datapath, packet: &[u8], repeat: u32) -> Result<Run> {
    run_on(datapath, Program::Gateway, packet, repeat)
}

/// Runs `program` of `datapath` on `packet` `repeat` times (one call).
pub fn run_on(datapath: &mut Datapath, program: Program, packet: &[u8], repeat: u32) -> Result<Run> {
    let mut out = vec![0u8; packet.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(packet);
    opts.data_out = Some(&mut out);
    opts.repeat = repeat;
    let result = program.of(datapath)?.test_run(opts).context("BPF_PROG_TEST_RUN")?;
    out.truncate(result.data_size_out as usize);
    Ok(Run { action: result.return_value, duration_ns: result.duration.as_nanos() as u64, packet: out })
}

/// Runs `packet` once and fails unless the program returned `action`.
pub fn run_expecting(datapath: &mut Datapath, packet: &[u8], action: u32, what: &str) -> Result<Run> {
    run_expecting_on(datapath, Program::Gateway, packet, action, what)
}

/// [`run_expecting`] with `program`.
fn run_expecting_on(
    datapath: &mut Datapath,
    program: Program,
    packet: &[u8],
    action: u32,
    what: &str,
) -> Result<Run> {
    let result = run_on(datapath, program, packet, 1)?;
    if result.action != action {
        bail!("{what}: the program returned {} instead of {action}", result.action as i32);
    }
    Ok(result)
}

/// The clock overhead inside a single-repetition duration.
#[derive(Clone, Copy)]
pub struct Calibration {
    /// Per-run duration of the untouched packet at `CALIBRATION_REPEAT`.
    pub in_loop_ns: f64,
    /// Duration of the same packet run once per call (trimmed mean).
    pub single_ns: f64,
}

pub const CALIBRATION_REPEAT: u32 = 1_000_000;

impl Calibration {
    /// Measures with `untouched`, a frame the program passes on unchanged.
    pub fn measure(datapath: &mut Datapath, untouched: &[u8], single_runs: usize) -> Result<Calibration> {
        // Warm up caches and the JIT image.
        run(datapath, untouched, 10_000)?;
        let in_loop_ns = run(datapath, untouched, CALIBRATION_REPEAT)?.duration_ns as f64;
        let mut singles = Vec::with_capacity(single_runs);
        for _ in 0..single_runs {
            singles.push(run(datapath, untouched, 1)?.duration_ns);
        }
        // The kernel's clock ticks in 10 ns steps here, too coarse for a
        // median of ~100 ns: the mean (without the slowest 1%) is finer.
        Ok(Calibration { in_loop_ns, single_ns: Stats::of(&mut singles).trimmed_mean })
    }

    /// What the clock reads add to a single-repetition duration.
    pub fn overhead_ns(&self) -> f64 {
        (self.single_ns - self.in_loop_ns).max(0.0)
    }
}

/// Median, mean and 99th percentile of single-run durations, in ns.
pub struct Stats {
    pub median: f64,
    pub mean: f64,
    /// The mean of the runs up to the 99th percentile: what is left once
    /// interrupts and other rare stalls are set aside.
    pub trimmed_mean: f64,
    pub p99: f64,
}

impl Stats {
    pub fn of(durations: &mut [u64]) -> Stats {
        assert!(!durations.is_empty(), "no durations to summarize");
        durations.sort_unstable();
        let at = |q: f64| durations[((durations.len() - 1) as f64 * q).round() as usize] as f64;
        let mean_of = |d: &[u64]| d.iter().sum::<u64>() as f64 / d.len() as f64;
        let p99 = at(0.99);
        let kept = durations.partition_point(|&d| d as f64 <= p99);
        Stats { median: at(0.5), mean: mean_of(durations), trimmed_mean: mean_of(&durations[..kept]), p99 }
    }

    /// The same statistics without the clock overhead.
    pub fn minus(&self, overhead_ns: f64) -> Stats {
        Stats {
            median: self.median - overhead_ns,
            mean: self.mean - overhead_ns,
            trimmed_mean: self.trimmed_mean - overhead_ns,
            p99: self.p99 - overhead_ns,
        }
    }
}

/// Runs each packet of `packets` once (one call each), expecting `action`,
/// and returns the single-run durations.
pub fn run_each<'a>(
    datapath: &mut Datapath,
    packets: impl IntoIterator<Item = &'a [u8]>,
    action: u32,
    what: &str,
) -> Result<Vec<u64>> {
    run_each_on(datapath, Program::Gateway, packets, action, what)
}

/// [`run_each`] with `program`.
pub fn run_each_on<'a>(
    datapath: &mut Datapath,
    program: Program,
    packets: impl IntoIterator<Item = &'a [u8]>,
    action: u32,
    what: &str,
) -> Result<Vec<u64>> {
    packets
        .into_iter()
        .map(|p| run_expecting_on(datapath, program, p, action, what).map(|r| r.duration_ns))
        .collect()
}

/// Pins this thread to `cpu`: test runs execute on the caller's CPU, so
/// every run then sees the same caches and per-CPU map state.
pub fn pin_to_cpu(cpu: usize) -> Result<()> {
    set_affinity(&[cpu])
}

/// Lets this thread (and what it starts) run on every CPU again.
pub fn unpin(cpus: usize) -> Result<()> {
    set_affinity(&(0..cpus).collect::<Vec<_>>())
}

fn set_affinity(cpus: &[usize]) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in range.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity({cpus:?}): {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}
