//! The progress bar of `run`: on a terminal, indicatif's bar; with `--progress always`
//! elsewhere (a CI log, `kubectl logs`), a plain line once a second.

use std::io::IsTerminal;

use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// A bar on stderr when it is a terminal.
    Auto,
    /// A bar on a terminal; elsewhere (a CI log, `kubectl logs`) a progress line once a second.
    Always,
    /// No progress.
    Never,
}

/// The bar `mode` asks for, drawn on stderr; its length is set once the plan knows the rows.
pub fn bar(mode: ProgressMode) -> Option<ProgressBar> {
    let on_terminal = std::io::stderr().is_terminal();
    let show = match mode {
        ProgressMode::Always => true,
        ProgressMode::Never => false,
        ProgressMode::Auto => on_terminal,
    };
    show.then(|| {
        // indicatif hides a bar whose target is not a terminal, `always` included.
        let pb = if on_terminal {
            ProgressBar::new(0)
        } else {
            ProgressBar::with_draw_target(
                Some(0),
                ProgressDrawTarget::term_like(Box::<ProgressLog>::default()),
            )
        };
        pb.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {human_pos}/{human_len} rows {per_sec:0} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        pb
    })
}

/// Where `--progress always` draws when stderr is not a terminal: a line of its own at most
/// once a second (indicatif's own rate limit lets bursts of 20 through), since a log cannot
/// move a cursor back over the last one.
#[derive(Debug, Default)]
struct ProgressLog {
    last: std::sync::Mutex<Option<std::time::Instant>>,
}

impl TermLike for ProgressLog {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.write_str(s)
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        if s.trim().is_empty() {
            return Ok(());
        }
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
            return Ok(());
        }
        *last = Some(std::time::Instant::now());
        use std::io::Write;
        writeln!(std::io::stderr().lock(), "{}", s.trim_end())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        use std::io::Write;
        std::io::stderr().flush()
    }
}
