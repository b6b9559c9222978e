//! Latency summaries, error counts and the server-process probe.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::ReqError;

/// Nearest-rank percentile of an ascending slice: the smallest value with at
/// least `p` % of the values at or below it.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Latencies in milliseconds.
#[derive(Default, Clone)]
pub struct Latencies(Vec<f64>);

impl Latencies {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1000.0);
    }

    pub fn push_ms(&mut self, ms: f64) {
        self.0.push(ms);
    }

    pub fn extend(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// count, mean, p50/p90/p99/max in ms (rounded to µs); nulls when empty.
    pub fn summary(&self) -> Value {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        let r = |x: Option<f64>| x.map(round3);
        let mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        json!({
            "count": v.len(),
            "mean": r(mean),
            "p50": r(percentile(&v, 50.0)),
            "p90": r(percentile(&v, 90.0)),
            "p99": r(percentile(&v, 99.0)),
            "max": r(v.last().copied()),
        })
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Failed requests grouped by kind; the first few details are kept as examples.
#[derive(Default, Clone)]
pub struct Errors {
    counts: BTreeMap<String, u64>,
    examples: Vec<String>,
}

impl Errors {
    pub fn add(&mut self, e: &ReqError) {
        *self.counts.entry(e.key.clone()).or_default() += 1;
        if self.examples.len() < 5 {
            self.examples.push(e.to_string());
        }
    }

    /// A failure described by a message (requests made outside `Client`).
    pub fn add_message(&mut self, message: &str) {
        let kind = message.split(':').next().unwrap_or("error").to_owned();
        *self.counts.entry(kind).or_default() += 1;
        if self.examples.len() < 5 {
            self.examples.push(message.to_owned());
        }
    }

    pub fn merge(&mut self, other: Errors) {
        for (k, n) in other.counts {
            *self.counts.entry(k).or_default() += n;
        }
        for e in other.examples {
            if self.examples.len() < 5 {
                self.examples.push(e);
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn to_json(&self) -> Value {
        json!({ "total": self.total(), "by_kind": self.counts, "examples": self.examples })
    }
}

/// Reads a local server process's CPU time and memory from /proc.
#[derive(Clone, Copy)]
pub struct Probe {
    pub pid: u32,
    clock_ticks: f64,
}

impl Probe {
    pub fn new(pid: u32) -> Result<Self, String> {
        let probe = Self {
            pid,
            clock_ticks: clock_ticks(),
        };
        probe.cpu_seconds()?;
        Ok(probe)
    }

    /// User + system CPU seconds the process has used so far.
    pub fn cpu_seconds(&self) -> Result<f64, String> {
        let path = format!("/proc/{}/stat", self.pid);
        let stat = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {path} (is --server-pid right?): {e}"))?;
        parse_cpu_ticks(&stat)
            .map(|ticks| ticks as f64 / self.clock_ticks)
            .ok_or_else(|| format!("cannot parse {path}"))
    }

    /// Resident set size in MiB.
    pub fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        parse_vm_rss_kib(&status).map(|kib| round3(kib as f64 / 1024.0))
    }
}

/// `utime + stime` from a /proc/PID/stat line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last ')'.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn own_cpu_seconds() -> Option<f64> {
    Probe::new(std::process::id()).ok()?.cpu_seconds().ok()
}

/// `sysconf(_SC_CLK_TCK)` via getconf; 100 (Linux's value everywhere that
/// matters) if that fails.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// The measured phase of a scenario: wall time and, with a probe, server CPU.
pub struct Phase {
    start: Instant,
    cpu_start: Option<f64>,
    own_cpu_start: Option<f64>,
    probe: Option<Probe>,
}

pub struct PhaseResult {
    pub wall: Duration,
    /// CPU seconds this tool used: on a small machine the load generator
    /// competes with the server for the same cores.
    pub own_cpu_seconds: Option<f64>,
    pub cpu_seconds: Option<f64>,
    pub rss_mib: Option<f64>,
    pub rss_start_mib: Option<f64>,
}

impl Phase {
    pub fn begin(probe: Option<Probe>) -> (Self, Option<f64>) {
        let rss = probe.and_then(|p| p.rss_mib());
        let cpu_start = probe.and_then(|p| p.cpu_seconds().ok());
        (
            Self {
                start: Instant::now(),
                cpu_start,
                own_cpu_start: own_cpu_seconds(),
                probe,
            },
            rss,
        )
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn end(self, rss_start_mib: Option<f64>) -> PhaseResult {
        let wall = self.start.elapsed();
        let cpu_end = self.probe.and_then(|p| p.cpu_seconds().ok());
        PhaseResult {
            wall,
            own_cpu_seconds: match (self.own_cpu_start, own_cpu_seconds()) {
                (Some(a), Some(b)) => Some(round3(b - a)),
                _ => None,
            },
            cpu_seconds: match (self.cpu_start, cpu_end) {
                (Some(a), Some(b)) => Some(round3(b - a)),
                _ => None,
            },
            rss_mib: self.probe.and_then(|p| p.rss_mib()),
            rss_start_mib,
        }
    }
}

impl PhaseResult {
    /// The server figures for the report; `per_unit` = (name, units) adds CPU
    /// seconds per 1000 units (e.g. per 1000 messages).
    pub fn server_json(&self, pid: Option<u32>, per_unit: Option<(&str, u64)>) -> Value {
        let Some(pid) = pid else { return Value::Null };
        let mut v = json!({
            "pid": pid,
            "cpu_seconds": self.cpu_seconds,
            "cpu_utilisation_cores": self.cpu_seconds.map(|c| round3(c / self.wall.as_secs_f64().max(1e-9))),
            "rss_mib_before": self.rss_start_mib,
            "rss_mib_after": self.rss_mib,
        });
        if let (Some((name, units)), Some(cpu)) = (per_unit, self.cpu_seconds)
            && units > 0
        {
            v[format!("cpu_seconds_per_1000_{name}")] = json!(round3(cpu * 1000.0 / units as f64));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn proc_parsing() {
        let stat =
            "1234 (tok io) (x)) S 1 1234 1234 0 -1 4194560 5000 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        let status = "Name:\tbigd\nVmPeak:\t  9000 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss_kib(status), Some(20480));
    }

    #[test]
    fn own_process_is_probed() {
        let p = Probe::new(std::process::id()).unwrap();
        assert!(p.cpu_seconds().unwrap() >= 0.0);
        assert!(p.rss_mib().unwrap() > 0.0);
    }
}
