//! Progress bars on stderr for long runs (`backtest`, `replay`, `import`), with
//! indicatif; hidden when stderr is not a terminal (logs, pipes, tests).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar, or nothing when stderr is not a terminal.
#[derive(Debug, Clone)]
pub struct Bar(Option<ProgressBar>);

impl Bar {
    /// A bar of `len` units (`None`: a spinner), labelled `what`, counting `unit`.
    pub fn new(len: Option<u64>, what: &str, unit: &str) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = match len {
            Some(len) => ProgressBar::new(len).with_style(
                ProgressStyle::with_template(&format!(
                    "{{msg}} [{{bar:40}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, eta {{eta}})"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template(&format!(
                    "{{spinner}} {{msg}} {{human_pos}} {unit} ({{per_sec}})"
                ))
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar(Some(bar))
    }

    /// A byte-counting bar for reading a file of `len` bytes.
    pub fn bytes(len: Option<u64>, what: &str) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        let bar = match len {
            Some(len) => ProgressBar::new(len).with_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(what.to_owned());
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar(Some(bar))
    }

    pub fn set_message(&self, what: &str) {
        if let Some(b) = &self.0 {
            b.set_message(what.to_owned());
        }
    }

    pub fn set_length(&self, len: u64) {
        if let Some(b) = &self.0 {
            b.set_length(len);
        }
    }

    pub fn set_position(&self, pos: u64) {
        if let Some(b) = &self.0 {
            b.set_position(pos);
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Prints a line on stderr above the bar (or plainly without one).
    pub fn note(&self, line: &str) {
        match &self.0 {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}
