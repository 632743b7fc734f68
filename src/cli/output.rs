//! Printing: aligned tables for people, one JSON document for scripts, and log lines that
//! step around progress bars.

use std::io::Write;
use std::sync::{Mutex, PoisonError};

use crate::Job;
use indicatif::MultiProgress;
use serde::Serialize;

/// The progress bars on the screen now, if any: log lines are written around them.
static BARS: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Shows `bars` until [`hide_bars`]: log lines written meanwhile clear the bars, print, and
/// draw them again, instead of tearing them.
pub fn show_bars(bars: &MultiProgress) {
    *BARS.lock().unwrap_or_else(PoisonError::into_inner) = Some(bars.clone());
}

pub fn hide_bars() {
    *BARS.lock().unwrap_or_else(PoisonError::into_inner) = None;
}

/// Where `tracing` writes: stderr, one whole event at a time, around the progress bars.
pub struct LogWriter;

/// One event's text, written out when the event is done.
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let write = || {
            let _ = std::io::stderr().write_all(&self.0);
        };
        match &*BARS.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(bars) => bars.suspend(write),
            None => write(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::with_capacity(256))
    }
}

/// Prints a line on stdout, ignoring a closed pipe: for the long-running commands (worker,
/// serve), whose output may be piped into a reader that goes away first.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
pub(crate) use say;

/// Prints one JSON document on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => say!("{text}"),
        Err(e) => eprintln!("jobq: cannot print JSON: {e}"),
    }
}

/// Text stored by anyone (a tenant's kind, a handler's stage or error) made safe to print:
/// control characters (ESC, BEL, CR, LF, …) and the bidirectional overrides are written as
/// escapes, so that no value can move the cursor, retitle the terminal or forge a row.
pub fn clean(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `1 job`, `2 jobs`.
pub fn jobs(n: usize) -> String {
    if n == 1 {
        "1 job".into()
    } else {
        format!("{n} jobs")
    }
}

/// A stored value, or `-` for none, made safe to print.
pub fn fmt_opt(value: &Option<String>) -> String {
    value
        .as_deref()
        .map_or_else(|| "-".into(), |v| clean(v).into_owned())
}

pub fn fmt_secs(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.3}s")
    } else {
        format!("{s:.1}s")
    }
}

/// A table with a header row; columns as wide as their widest cell.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<I, S>(headers: I) -> Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            rows: vec![headers.into_iter().map(Into::into).collect()],
        }
    }

    /// A row; every cell is made safe to print (see [`clean`]).
    pub fn row<I>(&mut self, cells: I)
    where
        I: IntoIterator<Item = String>,
    {
        self.rows
            .push(cells.into_iter().map(|c| clean(&c).into_owned()).collect());
    }

    pub fn print(&self) {
        print!("{}", self.render());
    }

    /// The table as text, one line a row.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let line: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    if c + 1 == row.len() {
                        cell.clone()
                    } else {
                        format!("{cell:<width$}", width = widths[c])
                    }
                })
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    }
}

/// One job, every field, for `jobq show`.
pub fn print_job(job: &Job) {
    let ts = |t: Option<crate::Timestamp>| t.map_or_else(|| "-".to_string(), |t| t.to_rfc3339());
    println!("id               {}", job.id);
    println!("kind             {}", clean(&job.kind));
    println!("queue            {}", clean(&job.queue));
    if job.scheduled {
        println!("status           {} (scheduled)", job.status);
    } else {
        println!("status           {}", job.status);
    }
    if job.status == crate::Status::Waiting {
        match &job.waiting_for {
            Some(event) => println!(
                "waiting for      event {} (until {} at the latest)",
                clean(event),
                job.run_after.to_rfc3339()
            ),
            None => println!("waiting for      {} (a sleep)", job.run_after.to_rfc3339()),
        }
    }
    println!("priority         {}", job.priority);
    println!("attempts         {}/{}", job.attempts, job.max_attempts);
    if job.snoozes > 0 {
        println!("snoozes          {}", job.snoozes);
    }
    println!("stage            {}", fmt_opt(&job.stage));
    println!("progress         {:.0}%", job.progress * 100.0);
    println!("run after        {}", job.run_after.to_rfc3339());
    println!("locked by        {}", fmt_opt(&job.locked_by));
    println!("heartbeat at     {}", ts(job.heartbeat_at));
    println!("owner            {}", fmt_opt(&job.owner));
    println!("group            {}", fmt_opt(&job.group_id));
    if let Some(r) = &job.flow_ref {
        println!("flow ref         {}", clean(r));
    }
    if let Some(key) = &job.concurrency_key {
        println!("concurrency key  {}", clean(key));
    }
    println!("idempotency key  {}", fmt_opt(&job.idempotency_key));
    println!("external id      {}", fmt_opt(&job.external_id));
    println!("cost             {} cents", job.cost_cents);
    println!("created at       {}", job.created_at.to_rfc3339());
    println!("started at       {}", ts(job.started_at));
    println!("completed at     {}", ts(job.completed_at));
    // JSON text escapes control characters by itself.
    println!("input            {}", job.input);
    println!(
        "output           {}",
        job.output
            .as_ref()
            .map_or_else(|| "-".to_string(), |o| o.to_string())
    );
    if let Some(code) = &job.error_code {
        println!("error code       {}", clean(code));
    }
    if let Some(err) = &job.last_error {
        // One printed line per line of the message, each made safe.
        let lines: Vec<String> = err.split('\n').map(|l| clean(l).into_owned()).collect();
        println!("last error       {}", lines.join("\n                 "));
    }
    if let Some(steps) = job.steps.as_ref().filter(|s| !s.is_empty()) {
        println!("steps            {}", steps.len());
        for step in steps {
            let ended = step.ended_at.map_or_else(
                || "(not ended)".to_string(),
                |t| crate::Timestamp::from_millis(t).to_rfc3339(),
            );
            let what = match (step.kind, &step.event) {
                (crate::StepKind::Wait, Some(event)) => format!("  event {}", clean(event)),
                _ => String::new(),
            };
            println!(
                "  {:<24} {}  {}  {} bytes{what}",
                clean(&step.name),
                crate::Timestamp::from_millis(step.started_at).to_rfc3339(),
                ended,
                step.output_size()
            );
        }
    }
    for (title, links) in [
        ("dependencies", &job.dependencies),
        ("dependents", &job.dependents),
    ] {
        if let Some(links) = links.as_ref().filter(|l| !l.is_empty()) {
            println!("{title:<17}{}", links.len());
            for link in links {
                let name = link
                    .flow_ref
                    .as_deref()
                    .map(|r| format!("  ({})", clean(r)))
                    .unwrap_or_default();
                println!(
                    "  {}  {:<10} {}{name}",
                    link.id,
                    link.status,
                    clean(&link.kind)
                );
            }
        }
    }
    if !job.errors.is_empty() {
        println!("errors           {} failed attempt(s):", job.errors.len());
        for e in &job.errors {
            let at = crate::Timestamp::from_millis(e.at).to_rfc3339();
            let first_line = clean(e.message.lines().next().unwrap_or(""));
            println!(
                "  #{:<3} {at}  {:<18} {first_line}",
                e.attempt,
                clean(e.code.as_deref().unwrap_or("-"))
            );
            if let Some(detail) = &e.detail {
                for line in detail.lines() {
                    println!("        | {}", clean(line));
                }
            }
        }
    }
}
