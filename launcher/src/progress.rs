//! Rank 0's account of how far a run has got: a bar redrawn in place on a
//! terminal, a plain line every so often in a batch log.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Nothing is shown for runs shorter than this.
const QUIET_FOR: Duration = Duration::from_secs(2);
const REDRAW: Duration = Duration::from_millis(200);
const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    total: usize,
    done: usize,
    start: Instant,
    last: Instant,
    terminal: bool,
    drawn: bool,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        let now = Instant::now();
        Progress {
            total,
            done: 0,
            start: now,
            last: now,
            terminal: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    pub fn advance(&mut self, rows: usize) {
        self.done += rows;
        let elapsed = self.start.elapsed();
        let every = if self.terminal { REDRAW } else { LOG_EVERY };
        if elapsed < QUIET_FOR || self.last.elapsed() < every || self.done >= self.total {
            return;
        }
        self.last = Instant::now();
        let rate = self.done as f64 / elapsed.as_secs_f64().max(1e-9);
        let left = (self.total - self.done) as f64 / rate.max(1e-9);
        let pct = 100.0 * self.done as f64 / self.total.max(1) as f64;
        let text = format!(
            "{}/{} rows ({pct:.0}%), {rate:.0} rows/s, about {left:.0} s to go",
            self.done, self.total
        );
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let filled = (pct / 5.0) as usize;
            let _ = write!(
                err,
                "\r[{}{}] {text}\x1b[K",
                "#".repeat(filled),
                " ".repeat(20 - filled.min(20))
            );
            self.drawn = true;
        } else {
            let _ = writeln!(err, "progress: {text}");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}
