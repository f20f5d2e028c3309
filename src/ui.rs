//! Terminal and CI output: stage headers, prefixed script output, progress.
//!
//! Everything human goes to stderr; stdout is reserved for results (`--json`). On a terminal,
//! long steps draw a progress bar; elsewhere (CI, pipes, `CI=true`) they print a plain line at
//! most every few seconds, so logs stay short and line-oriented.

use std::fmt::Display;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Terminal,
    Plain,
    Quiet,
}

#[derive(Debug, Clone)]
pub struct Ui {
    mode: Mode,
}

/// How often a plain (non-terminal) progress line may be printed.
const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

impl Ui {
    pub fn new(quiet: bool) -> Self {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() && !ci {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        Ui { mode }
    }

    /// Whether progress bars are drawn (a terminal, not CI, not quiet). Costly extras that only
    /// feed a bar, like asking the engine for a container's size, are skipped otherwise.
    pub fn draws_bars(&self) -> bool {
        self.mode == Mode::Terminal
    }

    /// A Ui that prints nothing (library use, tests).
    pub fn silent() -> Self {
        Ui { mode: Mode::Quiet }
    }

    fn emit(&self, line: &str) {
        if self.mode == Mode::Quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{line}");
    }

    /// A stage header: `==> export: packing container …`.
    pub fn stage(&self, stage: &str, msg: impl Display) {
        self.emit(&format!("==> {stage}: {msg}"));
    }

    /// A detail line under the current stage.
    pub fn info(&self, msg: impl Display) {
        self.emit(&format!("    {msg}"));
    }

    pub fn warn(&self, msg: impl Display) {
        // Warnings are printed even in quiet mode: they ask for attention.
        let _ = writeln!(std::io::stderr().lock(), "warning: {msg}");
    }

    /// One line of a script's output, prefixed with the script's name.
    pub fn script_line(&self, script: &str, line: &str) {
        self.emit(&format!("[{script}] {line}"));
    }

    /// A byte-counting progress indicator; `total` when known.
    pub fn bytes(&self, label: &str, total: Option<u64>) -> Progress {
        let bar = match self.mode {
            Mode::Terminal => {
                let pb = match total {
                    Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
                    None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
                };
                let tpl = if total.is_some() {
                    "    {prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
                } else {
                    "    {prefix} {spinner} {bytes} {binary_bytes_per_sec} {elapsed}"
                };
                pb.set_style(
                    ProgressStyle::with_template(tpl)
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                pb.set_prefix(label.to_owned());
                pb.enable_steady_tick(Duration::from_millis(200));
                Some(pb)
            }
            _ => None,
        };
        Progress(Arc::new(ProgressInner {
            bar,
            plain: self.mode == Mode::Plain,
            label: label.to_owned(),
            total,
            state: Mutex::new((0, Instant::now())),
        }))
    }
}

#[derive(Debug)]
struct ProgressInner {
    bar: Option<ProgressBar>,
    plain: bool,
    label: String,
    total: Option<u64>,
    /// (position, last time a plain line was printed)
    state: Mutex<(u64, Instant)>,
}

/// A cheap, clonable handle; safe to update from a blocking thread.
#[derive(Debug, Clone)]
pub struct Progress(Arc<ProgressInner>);

impl Progress {
    pub fn set(&self, pos: u64) {
        let inner = &self.0;
        if let Some(pb) = &inner.bar {
            pb.set_position(pos);
            return;
        }
        let Ok(mut st) = inner.state.lock() else {
            return;
        };
        st.0 = pos;
        if inner.plain && st.1.elapsed() >= PLAIN_INTERVAL {
            st.1 = Instant::now();
            eprintln!("    {}: {}", inner.label, describe(pos, inner.total));
        }
    }

    pub fn inc(&self, delta: u64) {
        let pos = self.0.state.lock().map(|s| s.0).unwrap_or(0) + delta;
        if let Ok(mut st) = self.0.state.lock() {
            st.0 = pos;
        }
        self.set(pos);
    }

    pub fn finish(&self) {
        if let Some(pb) = &self.0.bar {
            pb.finish_and_clear();
        }
    }
}

fn describe(pos: u64, total: Option<u64>) -> String {
    match total {
        Some(t) if t > 0 => format!(
            "{} of {} ({}%)",
            human_bytes(pos),
            human_bytes(t),
            pos.saturating_mul(100) / t
        ),
        _ => human_bytes(pos),
    }
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_humane() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(describe(50, Some(200)), "50 B of 200 B (25%)");
    }
}
