//! What a command says: report lines on stdout (`@progress`, `@stage`, `@cost`,
//! `@snooze`), its output (JSON or text), and the end of its stderr.

use std::io::Read;
use std::time::Duration;

use crate::worker::JobContext;

/// Stdout kept as output, at most; the rest is read and dropped (and a warning says so).
const MAX_STDOUT: usize = 1 << 20;

/// The longest stdout line read as a possible report line; longer lines are output.
const MAX_REPORT_LINE: usize = 8 << 10;

/// Lines of stderr kept for the error message.
pub(super) const STDERR_LINES: usize = 20;

/// Bytes of stderr kept for the error message, at most (the end of it).
const STDERR_TAIL: usize = 4 << 10;

/// A report line of the protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportLine {
    /// `@progress P [STAGE]`: progress 0 to 1, and optionally the stage.
    Progress(f64, Option<String>),
    /// `@stage STAGE`.
    Stage(String),
    /// `@cost CENTS`: add to the job's cost.
    Cost(i64),
    /// `@snooze DUR`: how long exit 75 snoozes the job (e.g. `@snooze 5m`).
    Snooze(Duration),
}

/// Reads one stdout line: `None` when it is not a report (ordinary output), `Some(Err)` for
/// a report line that is malformed (it is ignored, with a warning).
///
/// # Examples
///
/// ```
/// use jobq::exec::{ReportLine, parse_report_line};
///
/// assert_eq!(parse_report_line("@progress 0.5 transcoding"), Some(Ok(ReportLine::Progress(0.5, Some("transcoding".into())))));
/// assert_eq!(parse_report_line("@cost 12"), Some(Ok(ReportLine::Cost(12))));
/// assert_eq!(parse_report_line("{\"ok\": true}"), None);
/// assert!(parse_report_line("@progress 1.5").unwrap().is_err());
/// ```
pub fn parse_report_line(line: &str) -> Option<Result<ReportLine, String>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (directive, rest) = match line.split_once(char::is_whitespace) {
        Some((d, r)) => (d, r.trim()),
        None => (line, ""),
    };
    let report = match directive {
        "@progress" => {
            let (value, stage) = match rest.split_once(char::is_whitespace) {
                Some((v, s)) => (v, Some(s.trim())),
                None => (rest, None),
            };
            let p: f64 = match value.parse() {
                Ok(p) => p,
                Err(_) => {
                    return Some(Err(format!(
                        "@progress needs a number from 0 to 1, got {value:?}"
                    )));
                }
            };
            if !(0.0..=1.0).contains(&p) {
                return Some(Err(format!("@progress {p} is outside 0 to 1")));
            }
            ReportLine::Progress(p, stage.filter(|s| !s.is_empty()).map(String::from))
        }
        "@stage" if !rest.is_empty() => ReportLine::Stage(rest.to_string()),
        "@stage" => return Some(Err("@stage needs a stage name".into())),
        "@cost" => match rest.parse::<i64>() {
            Ok(c) if (0..=crate::MAX_COST_CENTS).contains(&c) => ReportLine::Cost(c),
            _ => {
                return Some(Err(format!(
                    "@cost needs a whole number of cents from 0 to {}, got {rest:?}",
                    crate::MAX_COST_CENTS
                )));
            }
        },
        "@snooze" => match crate::duration::parse_duration(rest) {
            Ok(d) if d <= crate::duration::MAX_DURATION => ReportLine::Snooze(d),
            Ok(_) => return Some(Err(format!("@snooze {rest} is more than 100 years"))),
            Err(e) => return Some(Err(format!("@snooze needs a duration such as 30s: {e}"))),
        },
        _ => return None,
    };
    Some(Ok(report))
}

/// What a command printed on stdout, kept within bounds: report lines are applied as they
/// come; other output is kept up to [`MAX_STDOUT`] bytes and the rest read and dropped, so
/// that no amount of output changes the outcome or the worker's memory.
pub(super) struct Stdout<'a> {
    ctx: &'a JobContext,
    output: Vec<u8>,
    truncated: bool,
    /// The line being read, while it may still be a report line.
    line: Vec<u8>,
    /// The line being read is too long to be a report: it goes to the output as it comes.
    long_line: bool,
    /// The duration of the last `@snooze` line.
    snooze: std::cell::Cell<Option<Duration>>,
}

impl<'a> Stdout<'a> {
    pub(super) fn new(ctx: &'a JobContext) -> Stdout<'a> {
        Stdout {
            ctx,
            output: Vec::new(),
            truncated: false,
            line: Vec::new(),
            long_line: false,
            snooze: std::cell::Cell::new(None),
        }
    }

    pub(super) fn read_all(mut self, mut from: impl Read) -> (Vec<u8>, bool, Option<Duration>) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if !self.line.is_empty() || self.long_line {
            self.end_line(false);
        }
        (self.output, self.truncated, self.snooze.get())
    }

    fn feed(&mut self, chunk: &[u8]) {
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            let (text, ends) = match piece.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (piece, false),
            };
            if self.long_line {
                self.keep(text);
            } else if self.line.len() + text.len() <= MAX_REPORT_LINE {
                self.line.extend_from_slice(text);
            } else {
                let start = std::mem::take(&mut self.line);
                self.keep(&start);
                self.keep(text);
                self.long_line = true;
            }
            if ends {
                self.end_line(true);
            }
        }
    }

    fn end_line(&mut self, newline: bool) {
        if !self.long_line {
            let line = std::mem::take(&mut self.line);
            let text = String::from_utf8_lossy(&line);
            match parse_report_line(&text) {
                Some(Ok(report)) => {
                    self.apply(report);
                    return;
                }
                Some(Err(why)) => {
                    tracing::warn!(job_id = %self.ctx.id(), line = %text, why, "jobq: malformed report line ignored");
                    return;
                }
                None => self.keep(&line),
            }
        }
        self.long_line = false;
        if newline {
            self.keep(b"\n");
        }
    }

    fn apply(&self, report: ReportLine) {
        let ctx = self.ctx;
        let applied = match report {
            ReportLine::Progress(p, Some(stage)) => ctx.set_progress_and_stage(p, &stage),
            ReportLine::Progress(p, None) => ctx.set_progress(p),
            ReportLine::Stage(stage) => ctx.set_stage(&stage),
            ReportLine::Cost(cents) => ctx.add_cost(cents),
            ReportLine::Snooze(d) => {
                self.snooze.set(Some(d));
                Ok(())
            }
        };
        if let Err(e) = applied {
            tracing::warn!(job_id = %ctx.id(), error = %e, "jobq: report not applied");
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_STDOUT - self.output.len();
        if bytes.len() > room {
            self.truncated = true;
        }
        self.output
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// The end of what a command wrote on stderr: all of it is read (a command is never cut
/// off by a full pipe), and only the last [`STDERR_LINES`] lines, at most
/// [`STDERR_TAIL`] bytes, are kept.
pub(super) fn stderr_tail(mut from: impl Read) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 4 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let cut = tail.len() > STDERR_TAIL;
    if cut {
        tail.drain(..tail.len() - STDERR_TAIL);
    }
    let text = String::from_utf8_lossy(&tail);
    let text = text.trim_end_matches(['\n', '\r']);
    let lines: Vec<&str> = text.split('\n').collect();
    let kept = &lines[lines.len().saturating_sub(STDERR_LINES)..];
    let joined = kept.join("\n");
    if cut || kept.len() < lines.len() {
        format!("…{joined}")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_parse() {
        assert_eq!(
            parse_report_line("@progress 0.45"),
            Some(Ok(ReportLine::Progress(0.45, None)))
        );
        assert_eq!(
            parse_report_line("@progress 1 done now\r"),
            Some(Ok(ReportLine::Progress(1.0, Some("done now".into()))))
        );
        assert_eq!(
            parse_report_line("@stage  llm_analysis "),
            Some(Ok(ReportLine::Stage("llm_analysis".into())))
        );
        assert_eq!(
            parse_report_line("@cost 250"),
            Some(Ok(ReportLine::Cost(250)))
        );
        for bad in [
            "@progress",
            "@progress x",
            "@progress -0.1",
            "@progress 1.01",
            "@progress NaN",
            "@progress inf",
            "@stage",
            "@stage   ",
            "@cost",
            "@cost -1",
            "@cost 1.5",
            "@cost 99999999999999999999",
            "@cost 1000000000001",
            "@cost 9223372036854775807",
        ] {
            assert!(matches!(parse_report_line(bad), Some(Err(_))), "{bad:?}");
        }
        for plain in [
            "",
            "hello",
            "{\"a\":1}",
            "@other thing",
            " @progress 0.5",
            "progress 0.5",
            "@progresss 0.5",
        ] {
            assert_eq!(parse_report_line(plain), None, "{plain:?}");
        }
    }
}
