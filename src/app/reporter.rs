//! The one [`Progress`] reporter: long work (pre-training, a sweep's cells)
//! stays visible wherever stderr goes: an indicatif bar on a terminal, and
//! plain lines at a modest interval when stderr is a file or a pipe (CI
//! logs, Slurm, `| tee`), where a bar would print nothing or garbage.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::services::{Progress, Task};

/// Seconds between plain progress lines when stderr is not a terminal.
pub const LINE_INTERVAL: Duration = Duration::from_secs(30);

/// The app's reporter: shows tasks on stderr when enabled (not `--quiet`).
#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    pub enabled: bool,
}

impl Progress for Reporter {
    fn start(&self, label: &str, unit: &str, total: u64) -> Box<dyn Task> {
        Box::new(Bar::new(label, unit, total, self.enabled && total > 0))
    }
}

/// One task's display; cheap to share between threads.
pub struct Bar {
    inner: Inner,
}

enum Inner {
    Hidden,
    Bar(ProgressBar),
    Lines(Mutex<Lines>),
}

struct Lines {
    label: String,
    unit: String,
    total: u64,
    done: u64,
    message: String,
    start: Instant,
    last: Instant,
    interval: Duration,
}

impl Lines {
    fn line(&self) -> String {
        progress_line(&self.label, &self.unit, self.done, self.total, &self.message, self.start.elapsed())
    }

    fn emit(&mut self) {
        self.last = Instant::now();
        let _ = writeln!(std::io::stderr(), "{}", self.line());
    }
}

/// One plain progress line (pure: the caller reads the clock).
fn progress_line(label: &str, unit: &str, done: u64, total: u64, message: &str, elapsed: Duration) -> String {
    let mut s = format!("{label}: {done}/{total} {unit}");
    if let Some(pct) = (done * 100).checked_div(total) {
        s.push_str(&format!(" ({pct}%)"));
    }
    if !message.is_empty() {
        s.push_str(&format!(", {message}"));
    }
    s.push_str(&format!(", {} elapsed", human(elapsed)));
    if done > 0 && done < total {
        let left = elapsed.mul_f64((total - done) as f64 / done as f64);
        s.push_str(&format!(", ~{} left", human(left)));
    }
    s
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl Bar {
    /// Nothing is shown.
    pub fn hidden() -> Bar {
        Bar { inner: Inner::Hidden }
    }

    /// Progress over `total` `unit`s (e.g. 2000 "steps"), labelled `label`:
    /// a bar on a terminal, lines every [`LINE_INTERVAL`] otherwise, nothing
    /// when `enabled` is false.
    pub fn new(label: &str, unit: &str, total: u64, enabled: bool) -> Bar {
        if !enabled {
            return Bar::hidden();
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let template =
                format!("{label} {{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{elapsed}} elapsed, ~{{eta}} left");
            bar.set_style(ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar()));
            Bar { inner: Inner::Bar(bar) }
        } else {
            Bar::lines(label, unit, total, LINE_INTERVAL)
        }
    }

    /// Plain lines every `interval` (and at the start and the end), whatever stderr is.
    pub fn lines(label: &str, unit: &str, total: u64, interval: Duration) -> Bar {
        let now = Instant::now();
        let mut l = Lines {
            label: label.into(),
            unit: unit.into(),
            total,
            done: 0,
            message: String::new(),
            start: now,
            last: now,
            interval,
        };
        l.emit();
        Bar { inner: Inner::Lines(Mutex::new(l)) }
    }

    /// The line that would be printed now (tests, logs).
    pub fn current_line(&self) -> Option<String> {
        match &self.inner {
            Inner::Lines(l) => Some(l.lock().expect("progress lock").line()),
            _ => None,
        }
    }
}

impl Task for Bar {
    fn inc(&self, n: u64) {
        match &self.inner {
            Inner::Hidden => {}
            Inner::Bar(b) => b.inc(n),
            Inner::Lines(l) => {
                let mut l = l.lock().expect("progress lock");
                l.done += n;
                if l.last.elapsed() >= l.interval && l.done < l.total {
                    l.emit();
                }
            }
        }
    }

    fn set_message(&self, msg: String) {
        match &self.inner {
            Inner::Hidden => {}
            Inner::Bar(b) => b.set_message(msg),
            Inner::Lines(l) => l.lock().expect("progress lock").message = msg,
        }
    }

    // The bar is cleared; a last line is printed.
    fn finish(&self) {
        match &self.inner {
            Inner::Hidden => {}
            Inner::Bar(b) => b.finish_and_clear(),
            Inner::Lines(l) => l.lock().expect("progress lock").emit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_line_says_how_far_with_the_message_and_an_estimate() {
        let line = progress_line("pretrain", "steps", 500, 2000, "loss 2.103", Duration::from_secs(150));
        assert_eq!(line, "pretrain: 500/2000 steps (25%), loss 2.103, 2m30s elapsed, ~7m30s left");
        let done = progress_line("cells", "cells", 30, 30, "", Duration::from_secs(257));
        assert_eq!(done, "cells: 30/30 cells (100%), 4m17s elapsed");
        assert_eq!(progress_line("cells", "cells", 0, 0, "", Duration::ZERO), "cells: 0/0 cells, 0s elapsed");
    }

    #[test]
    fn hidden_progress_has_no_line_and_a_lines_reporter_counts() {
        assert_eq!(Bar::hidden().current_line(), None);
        let p = Bar::lines("pretrain", "steps", 10, Duration::from_secs(3600));
        p.inc(4);
        assert!(p.current_line().unwrap().starts_with("pretrain: 4/10 steps (40%), "));
    }

    #[test]
    fn durations_read_as_a_person_writes_them() {
        assert_eq!(human(Duration::from_secs(7)), "7s");
        assert_eq!(human(Duration::from_secs(452)), "7m32s");
        assert_eq!(human(Duration::from_secs(7300)), "2h01m");
    }
}
