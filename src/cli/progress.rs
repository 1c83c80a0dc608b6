//! Progress on stderr for `fill` and `export`: an indicatif bar on a terminal, a plain line
//! every [`LINE_EVERY`] otherwise (journald, pipes), so a log gets a readable history and no
//! control characters. Kept within 80 columns.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use blkcache::map::stats::format_num;
use blkcache::rescue::{format_duration, Live};

/// How often a plain progress line is written when stderr is no terminal.
pub const LINE_EVERY: Duration = Duration::from_secs(10);

/// A bar on a terminal, plain lines otherwise.
enum Shown {
    Bar(ProgressBar),
    Lines(Option<Instant>),
}

impl Shown {
    fn new(template: &str) -> Shown {
        if !std::io::stderr().is_terminal() {
            return Shown::Lines(None);
        }
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("##-");
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(5));
        bar.set_style(style);
        Shown::Bar(bar)
    }

    /// Whether a plain line is due (and counts it as written).
    fn line_due(last: &mut Option<Instant>) -> bool {
        if last.is_some_and(|t| t.elapsed() < LINE_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn finish(&mut self) {
        if let Shown::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

fn line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
    let _ = err.flush();
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// A fill's progress: where it is, what is rescued and bad, the rate and an estimate.
pub struct FillProgress(Shown);

impl FillProgress {
    pub fn new() -> FillProgress {
        FillProgress(Shown::new("{wide_msg}\n{bar:30} {prefix}"))
    }

    pub fn show(&mut self, l: &Live) {
        let eta = l.eta.map_or_else(|| "?".to_string(), format_duration);
        let rate = format!("{}B/s", format_num(l.current_rate));
        let what = format!(
            "{} pass {} at {}B: {}B bad in {} area(s), {} reads, {} failed",
            l.phase,
            l.pass,
            format_num(l.pos),
            format_num(l.bad_sector),
            l.bad_areas,
            l.reads,
            l.read_errors,
        );
        match &mut self.0 {
            Shown::Bar(bar) => {
                bar.set_length(l.size);
                bar.set_position(l.rescued);
                bar.set_prefix(format!(
                    "{:6.2}% {}B/{}B {rate} ETA {eta}",
                    pct(l.rescued, l.size),
                    format_num(l.rescued),
                    format_num(l.size),
                ));
                bar.set_message(what);
            }
            Shown::Lines(last) => {
                if Shown::line_due(last) {
                    line(&format!(
                        "fill: {:.2}% rescued ({}B of {}B), {what}; {rate}, ETA {eta}",
                        pct(l.rescued, l.size),
                        format_num(l.rescued),
                        format_num(l.size),
                    ));
                }
            }
        }
    }

    /// Removes the bar (the summary follows).
    pub fn finish(&mut self) {
        self.0.finish();
    }

    /// A handle that prints lines above the bar from another thread (the signal thread).
    pub fn notes(&self) -> Notes {
        Notes(match &self.0 {
            Shown::Bar(bar) => Some(bar.clone()),
            Shown::Lines(_) => None,
        })
    }
}

/// Prints a line on stderr without breaking a bar being drawn.
#[derive(Clone)]
pub struct Notes(Option<ProgressBar>);

impl Notes {
    pub fn say(&self, text: &str) {
        match &self.0 {
            Some(bar) if !bar.is_finished() => bar.println(text),
            _ => line(text),
        }
    }
}

/// Bytes written of a whole (`export`).
pub struct BytesProgress {
    shown: Shown,
    what: &'static str,
    total: u64,
}

impl BytesProgress {
    pub fn new(what: &'static str, total: u64) -> BytesProgress {
        let shown = Shown::new(
            "{msg} {bar:30} {percent:>3}% {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} ETA {eta}",
        );
        if let Shown::Bar(bar) = &shown {
            bar.set_length(total);
            bar.set_message(what);
        }
        BytesProgress { shown, what, total }
    }

    pub fn set(&mut self, done: u64) {
        match &mut self.shown {
            Shown::Bar(bar) => bar.set_position(done),
            Shown::Lines(last) => {
                if Shown::line_due(last) && done < self.total {
                    line(&format!(
                        "{}: {:.0}% ({}B of {}B)",
                        self.what,
                        pct(done, self.total),
                        format_num(done),
                        format_num(self.total)
                    ));
                }
            }
        }
    }

    pub fn finish(&mut self) {
        self.shown.finish();
    }
}
