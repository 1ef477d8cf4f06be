//! The output: a Markdown table of medians (metric × path, with the ebpf
//! path's ratios to linux and direct), the machine and the command; and the
//! same plus every sample as JSON.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{EgressPath, Machine, Metric, Results, Settings, METRICS};

/// A value with about three significant digits.
pub fn format_value(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// `ebpf ÷ other` for `metric`, when both were measured and `other` is not 0.
fn ratio(results: &Results, metric: &Metric, other: EgressPath) -> Option<f64> {
    let ebpf = results.median(metric, EgressPath::Ebpf)?;
    let other = results.median(metric, other)?;
    (other != 0.0).then(|| ebpf / other)
}

/// The ratio columns that apply: ebpf against each other selected path.
fn ratio_columns(paths: &[EgressPath]) -> Vec<EgressPath> {
    if !paths.contains(&EgressPath::Ebpf) {
        return Vec::new();
    }
    [EgressPath::Linux, EgressPath::Direct].into_iter().filter(|p| paths.contains(p)).collect()
}

pub fn render(
    results: &Results,
    paths: &[EgressPath],
    machine: &Machine,
    command: &str,
    settings: &Settings,
    elapsed: Duration,
) -> String {
    let ratios = ratio_columns(paths);
    let mut header: Vec<String> = vec!["metric".into(), "unit".into(), "better".into()];
    header.extend(paths.iter().map(|p| p.name().to_string()));
    header.extend(ratios.iter().map(|p| format!("ebpf/{}", p.name())));
    let mut rows = vec![header];
    for metric in METRICS {
        if paths.iter().all(|&p| results.median(metric, p).is_none()) {
            continue;
        }
        let mut row = vec![metric.label.to_string(), metric.unit.to_string(), better(metric).to_string()];
        row.extend(paths.iter().map(|&p| results.median(metric, p).map(format_value).unwrap_or("-".into())));
        row.extend(
            ratios
                .iter()
                .map(|&p| ratio(results, metric, p).map(|r| format!("{r:.2}×")).unwrap_or("-".into())),
        );
        rows.push(row);
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "Medians of {} round(s), {} s per throughput, connection and UDP run; path order rotated every round.",
        settings.rounds, settings.secs
    );
    let _ = writeln!(out, "Machine: {}", machine.describe());
    let _ = writeln!(out, "Command: {command}\n");
    out.push_str(&markdown_table(&rows));
    let _ = writeln!(
        out,
        "\nRatios are ebpf ÷ the other path: above 1 is better where higher is better, below 1 where lower is \
         better (RTT, CPU per GB, loss, errors)."
    );
    let _ = writeln!(
        out,
        "CPU per GB: busy time of all CPUs (user+nice+system+irq+softirq in /proc/stat) during the 1-stream \
         run ÷ GB received; clients, servers, nodes and gateways all run on this one machine, so the whole \
         machine is the denominator."
    );
    if let Some(counters) = &results.agent_counters {
        let drops: Vec<String> = counters
            .iter()
            .filter(|(name, &n)| name.starts_with("drop_") && n > 0)
            .map(|(name, n)| format!("{name}={n}"))
            .collect();
        let _ = writeln!(
            out,
            "Agent drop counters after the run: {}",
            if drops.is_empty() { "none".to_string() } else { drops.join(", ") }
        );
    }
    let loads: Vec<String> = results.background_load.iter().map(|l| format!("{:.0}%", l * 100.0)).collect();
    let _ = writeln!(
        out,
        "Other work on the machine before/after the rounds: {}. Run time: {:.1} min (setup included).",
        if loads.is_empty() { "not measured".to_string() } else { loads.join(" / ") },
        elapsed.as_secs_f64() / 60.0
    );
    out
}

fn better(metric: &Metric) -> &'static str {
    if metric.lower_is_better {
        "lower"
    } else {
        "higher"
    }
}

/// A Markdown pipe table with padded columns (readable in a terminal and
/// pasteable into docs); the first column left-aligned, the others right.
fn markdown_table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0).max(3))
        .collect();
    let pad = |s: &str, c: usize| {
        let fill = " ".repeat(widths[c] - s.chars().count());
        if c < 3 {
            format!("{s}{fill}")
        } else {
            format!("{fill}{s}")
        }
    };
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> =
            (0..columns).map(|c| pad(row.get(c).map_or("", String::as_str), c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if i == 0 {
            let rule: Vec<String> = (0..columns)
                .map(
                    |c| if c < 3 { "-".repeat(widths[c]) } else { format!("{}:", "-".repeat(widths[c] - 1)) },
                )
                .collect();
            let _ = writeln!(out, "| {} |", rule.join(" | "));
        }
    }
    out
}

pub fn to_json(
    results: &Results,
    paths: &[EgressPath],
    machine: &Machine,
    command: &str,
    settings: &Settings,
    elapsed: Duration,
) -> Value {
    let metrics: Vec<Value> = METRICS
        .iter()
        .map(|metric| {
            let mut samples = Map::new();
            let mut medians = Map::new();
            for &path in paths {
                let values = results.samples.get(&(metric.id, path)).cloned().unwrap_or_default();
                samples.insert(path.name().into(), json!(values));
                medians.insert(path.name().into(), json!(results.median(metric, path)));
            }
            let mut ratios = Map::new();
            for other in ratio_columns(paths) {
                ratios.insert(format!("ebpf/{}", other.name()), json!(ratio(results, metric, other)));
            }
            json!({
                "id": metric.id,
                "label": metric.label,
                "unit": metric.unit,
                "lower_is_better": metric.lower_is_better,
                "samples": samples,
                "median": medians,
                "ratios": ratios,
            })
        })
        .collect();
    json!({
        "command": command,
        "machine": machine.to_json(),
        "settings": {"rounds": settings.rounds, "secs": settings.secs, "pings": settings.pings},
        "paths": paths.iter().map(|p| p.name()).collect::<Vec<_>>(),
        "round_orders": results
            .orders
            .iter()
            .map(|o| o.iter().map(|p| p.name()).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        "metrics": metrics,
        "failures": results.failures,
        "agent_counters": results.agent_counters,
        "background_load": results.background_load,
        "elapsed_s": elapsed.as_secs_f64(),
    })
}
