//! Progress for long jobs on stderr: an indicatif bar on a terminal; elsewhere (CI logs, `nohup`,
//! `2> file`) a plain line every few seconds, since indicatif draws nothing when stderr is not a
//! terminal and a job of minutes would otherwise be silent until it ends.

use std::io::IsTerminal;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Seconds between two plain progress lines (`INFERENCELAB_PROGRESS_SECONDS` overrides).
const LINE_EVERY_S: f64 = 5.0;

/// A progress bar that also reports when stderr is not a terminal. Derefs to the bar: `inc`,
/// `set_length`, `println`, ... work as on an indicatif bar. Dropping it stops the reporter.
pub struct Progress {
    bar: ProgressBar,
    ticker: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
}

impl std::ops::Deref for Progress {
    type Target = ProgressBar;
    fn deref(&self) -> &ProgressBar {
        &self.bar
    }
}

impl Progress {
    /// Nothing at all (`--quiet`, `--json`).
    pub fn hidden() -> Self {
        Progress {
            bar: ProgressBar::hidden(),
            ticker: None,
        }
    }

    /// A bar drawn with `template` on a terminal; otherwise one line `<what>: <pos>/<len>
    /// <unit> [<elapsed>]` right away and then every few seconds. `len` 0 means "set later".
    pub fn new(quiet: bool, len: u64, template: &str, what: &str, unit: &str) -> Self {
        if quiet {
            return Self::hidden();
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(len);
            bar.set_style(ProgressStyle::with_template(template).expect("static template"));
            return Progress { bar, ticker: None };
        }
        let bar = ProgressBar::hidden();
        bar.set_length(len);
        let every = std::env::var("INFERENCELAB_PROGRESS_SECONDS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .unwrap_or(LINE_EVERY_S);
        let (stop, stopped) = mpsc::channel::<()>();
        let (b, what, unit) = (bar.clone(), what.to_string(), unit.to_string());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            loop {
                let len = b
                    .length()
                    .filter(|&n| n > 0)
                    .map_or("?".to_string(), |n| n.to_string());
                let msg = b.message();
                eprintln!(
                    "{what}: {}/{len} {unit} [{:.0} s]{}",
                    b.position(),
                    started.elapsed().as_secs_f64(),
                    if msg.is_empty() {
                        String::new()
                    } else {
                        format!(" {msg}")
                    }
                );
                match stopped.recv_timeout(Duration::from_secs_f64(every)) {
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            }
        });
        Progress {
            bar,
            ticker: Some((stop, thread)),
        }
    }

    /// Clear the bar (or stop the lines).
    pub fn finish(&mut self) {
        if let Some((stop, thread)) = self.ticker.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
