//! Progress on stderr, shown only when stderr is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-count progress bar for one stage; hidden when stderr is not a terminal.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A hidden bar (tests, scripts, `--json`).
    pub fn hidden() -> Self {
        Progress {
            bar: ProgressBar::hidden(),
        }
    }

    /// A bar on stderr for `total_bytes`, with `label`, if stderr is a terminal.
    pub fn bytes(label: &str, total_bytes: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:>10} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        Progress { bar }
    }

    /// Advances by `n` bytes.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Starts the count and the clock (rate, ETA) again, for a stage that begins later than the
    /// bar was made.
    pub fn restart(&self) {
        self.bar.reset();
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// One stage of a run (scan, diff, write, commit): a spinner with the elapsed time while it
/// runs when stderr is a terminal, and one log line when it ends (`<stage>: <what> in <s> s`),
/// so that logs written to a file show each stage as it finishes.
pub struct Stage {
    name: &'static str,
    started: std::time::Instant,
    spinner: ProgressBar,
}

impl Stage {
    /// Starts stage `name` (`scan`, `diff`, `write`, `commit`).
    pub fn start(name: &'static str) -> Self {
        let spinner = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg:>10} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message(name);
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        Stage {
            name,
            started: std::time::Instant::now(),
            spinner,
        }
    }

    /// Ends the stage: clears the spinner and logs `<stage>: <what> in <s> s` ([`stage_line`]).
    pub fn done(self, what: impl std::fmt::Display) {
        self.spinner.finish_and_clear();
        let secs = self.started.elapsed().as_secs_f64();
        stage_line(
            !self.spinner.is_hidden(),
            format_args!("{}: {what} in {secs:.2} s", self.name),
        );
    }
}

/// Logs the line that ends a stage: at info when nothing showed the stage on a terminal (logs to
/// a file or a pipe: one line per stage), at debug when a bar or spinner did (`on_terminal`;
/// the summary gives the stage times too). Target `tributary::stage`.
pub fn stage_line(on_terminal: bool, line: std::fmt::Arguments<'_>) {
    if on_terminal {
        tracing::debug!(target: "tributary::stage", "{line}");
    } else {
        tracing::info!(target: "tributary::stage", "{line}");
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        self.spinner.finish_and_clear();
    }
}
