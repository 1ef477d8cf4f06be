//! The result table: one row per measurement, printed as text and
//! optionally written as JSON. With several rounds a row holds every
//! round's value and shows their median and range.
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

pub struct Row {
    pub measurement: String,
    /// One value per round, in round order.
    pub values: Vec<f64>,
    pub unit: &'static str,
}

impl Row {
    pub fn median(&self) -> f64 {
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        if sorted.len() % 2 == 1 {
            sorted[mid]
        } else {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        }
    }

    fn range(&self) -> (f64, f64) {
        let min = self.values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    }
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    round: usize,
}

impl Report {
    /// Starts round `round` (0-based): the next values go to it.
    pub fn start_round(&mut self, round: usize) {
        self.round = round;
    }

    /// Adds this round's value of a measurement and prints it at once, so a
    /// long run shows progress.
    pub fn add(&mut self, measurement: impl Into<String>, value: f64, unit: &'static str) {
        let measurement = measurement.into();
        eprintln!("microbench: [round {}] {measurement} = {} {unit}", self.round + 1, format_value(value));
        match self.rows.iter_mut().find(|r| r.measurement == measurement) {
            Some(row) => row.values.push(value),
            None => self.rows.push(Row { measurement, values: vec![value], unit }),
        }
    }

    pub fn print_table(&self) {
        let rounds = self.rows.iter().map(|r| r.values.len()).max().unwrap_or(1);
        let width = self.rows.iter().map(|r| r.measurement.len()).max().unwrap_or(0).max("measurement".len());
        let value_head = if rounds > 1 { format!("median of {rounds}") } else { "value".to_string() };
        let range_head = if rounds > 1 { "range" } else { "" };
        println!("{:<width$}  {value_head:>12}  {range_head:>15}  unit", "measurement");
        for row in &self.rows {
            let range = if row.values.len() > 1 {
                let (min, max) = row.range();
                format!("{}-{}", format_value(min), format_value(max))
            } else {
                String::new()
            };
            println!(
                "{:<width$}  {:>12}  {range:>15}  {}",
                row.measurement,
                format_value(row.median()),
                row.unit
            );
        }
    }

    pub fn write_json(&self, path: &Path, machine: &str) -> Result<()> {
        let rows: Vec<_> = self
            .rows
            .iter()
            .map(|r| json!({ "measurement": r.measurement, "value": r.median(), "rounds": r.values, "unit": r.unit }))
            .collect();
        let doc = json!({ "machine": machine, "rows": rows });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// Integers as integers, small values with one decimal.
fn format_value(value: f64) -> String {
    if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}
