//! Options and reporting shared by every scenario.

use std::time::Duration;

/// Command-line options, as in Python's bench.py.
pub struct Options {
    pub quick: bool,
    pub only: Vec<String>,
    pub reps: usize,
    pub verbose: bool,
    pub list: bool,
}

impl Options {
    pub fn from_args() -> Options {
        let mut o = Options {
            quick: false,
            only: Vec::new(),
            reps: 0,
            verbose: false,
            list: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--verbose" => o.verbose = true,
                "--list" => o.list = true,
                "--only" => {
                    o.only = args
                        .next()
                        .unwrap_or_default()
                        .split(',')
                        .map(str::to_owned)
                        .collect()
                }
                "--reps" => o.reps = args.next().and_then(|n| n.parse().ok()).unwrap_or(0),
                // `cargo bench` passes `--bench`; ignore it and anything unknown.
                _ => {}
            }
        }
        if o.reps == 0 {
            o.reps = if o.quick { 3 } else { 5 };
        }
        o
    }

    /// Exact names or prefixes, like Python's `--only` (used by `benches/cluster.rs`).
    #[allow(dead_code)]
    pub fn selected(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// As Python's `--only` among the scenarios `names`: a word that names one of them selects
    /// only that one (`pipe_pingpong` is not also `pipe_pingpong_pairs`), any other is a prefix.
    pub fn selected_among(&self, name: &str, names: &[&str]) -> bool {
        self.only.is_empty()
            || self.only.iter().any(|p| {
                if names.contains(&p.as_str()) {
                    name == p
                } else {
                    name.starts_with(p.as_str())
                }
            })
    }

    /// `full` normally, `quick` with `--quick`.
    pub fn size(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }
}

/// One scenario.
pub struct Scenario {
    pub name: &'static str,
    pub run: fn(&Options) -> Result<(), String>,
}

/// Prints one result line in bench.py's format (value rounded to 6 significant digits).
pub fn emit(scenario: &str, metric: &str, value: f64, unit: &str) {
    println!(
        "{{\"scenario\": \"{scenario}\", \"metric\": \"{metric}\", \"value\": {}, \"unit\": \"{unit}\"}}",
        six_digits(value)
    );
}

/// The value of metric `metric` among result lines printed by [`emit`] (another run's output).
pub fn metric_value<'a>(lines: impl IntoIterator<Item = &'a str>, metric: &str) -> Option<f64> {
    let needle = format!("\"metric\": \"{metric}\"");
    lines
        .into_iter()
        .find(|l| l.contains(&needle))
        .and_then(|l| {
            l.split("\"value\": ")
                .nth(1)?
                .split(',')
                .next()?
                .trim()
                .parse()
                .ok()
        })
}

fn six_digits(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (5 - magnitude).max(0) as usize;
    let s = format!("{v:.decimals$}");
    let rounded: f64 = s.parse().unwrap_or(v);
    format!("{rounded:?}")
}

/// The median of samples (the middle one for odd counts, the mean of the two middle ones else).
pub fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    }
}

/// The 99th percentile of samples: Python's `statistics.quantiles(samples, n=100)[98]`, the
/// exclusive method.
pub fn quantile_99(samples: &mut [f64]) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len() as f64;
    let pos = 0.99 * (n + 1.0) - 1.0;
    let lo = pos.floor().clamp(0.0, n - 1.0) as usize;
    let hi = (lo + 1).min(samples.len() - 1);
    samples[lo] + (samples[hi] - samples[lo]) * (pos - pos.floor())
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Machine and toolchain, on stderr, like bench.py's header.
pub fn header(opts: &Options) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "mp bench: rustc {} | kernel {} | {} CPUs | {} mode | reps {}",
        rustc_version(),
        kernel.trim(),
        mp::cpu_count(),
        if opts.quick { "quick" } else { "full" },
        opts.reps
    )
}

fn rustc_version() -> String {
    std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// Round-trip times in µs of `rounds` 8-byte messages over a socketpair to a forked child that
/// echoes them, after `warmup` untimed ones: the raw baseline for round-trip scenarios.
pub fn raw_echo_rtts(warmup: usize, rounds: usize) -> Result<Vec<f64>, String> {
    use std::io::{Read, Write};
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().map_err(|x| x.to_string())?;
    // SAFETY: the child only echoes on its inherited socket with read/write and then _exits.
    match unsafe { nix::unistd::fork() }.map_err(|x| x.to_string())? {
        nix::unistd::ForkResult::Child => {
            // The parent's end must close here too, or the child never sees end of stream.
            drop(a);
            let mut buf = [0u8; 8];
            while b.read_exact(&mut buf).is_ok() {
                if b.write_all(&buf).is_err() {
                    break;
                }
            }
            // SAFETY: _exit ends the child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(b);
            let mut samples = Vec::with_capacity(rounds);
            let mut buf = [0u8; 8];
            for i in 0..(warmup + rounds) as u64 {
                let t = std::time::Instant::now();
                a.write_all(&i.to_le_bytes()).map_err(|x| x.to_string())?;
                a.read_exact(&mut buf).map_err(|x| x.to_string())?;
                if i >= warmup as u64 {
                    samples.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
            drop(a);
            let _ = nix::sys::wait::waitpid(child, None);
            Ok(samples)
        }
    }
}
