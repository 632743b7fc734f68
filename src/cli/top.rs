//! `jobq top`: a live view of the queues for an operator on a terminal (over ssh too): per
//! queue what is ready and running, what finishes per second, failures, p95 run time and
//! wait, and a sparkline of completions, refreshed in place until `q`. Read from the rollups
//! and the queues' counts, so a refresh costs the same with any number of finished jobs.

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Args;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{Done, Refused, duration, open_existing};
use crate::{Queue, SeriesPoint, SeriesQuery};

#[derive(Args, Debug)]
pub(super) struct TopArgs {
    /// How often the view refreshes.
    #[arg(long, value_parser = duration, default_value = "1s")]
    interval: Duration,
    /// How far back the rates, failures, percentiles and sparklines reach (whole minutes).
    #[arg(long, value_parser = duration, default_value = "15m")]
    window: Duration,
    /// Print one view as text and exit (what `top` does when its output is not a terminal).
    #[arg(long)]
    once: bool,
    /// Only this owner's jobs.
    #[arg(long)]
    owner: Option<String>,
}

/// One line of the view: a queue, or every queue together.
struct QueueLine {
    name: String,
    ready: i64,
    running: i64,
    retry: i64,
    paused: bool,
    window: SeriesPoint,
    /// Jobs finished per minute, oldest first.
    spark: Vec<i64>,
}

/// What one refresh shows.
struct View {
    title: String,
    window_s: f64,
    lines: Vec<QueueLine>,
}

const COLUMNS: [&str; 9] = [
    "QUEUE", "READY", "RUNNING", "RETRY", "DONE/S", "FAILED", "RUN P95", "WAIT P95", "FINISHED",
];

pub(super) fn top(db: &Path, a: TopArgs) -> Done {
    if a.window < Duration::from_secs(60) || a.window > Duration::from_secs(24 * 3600) {
        return Err(Refused(format!(
            "--window {} is not between a minute and a day",
            crate::format_duration(a.window)
        )));
    }
    if a.interval < Duration::from_millis(100) {
        return Err(Refused(format!(
            "--interval {} is shorter than 100ms",
            crate::format_duration(a.interval)
        )));
    }
    let mut queue = open_existing(db)?;
    if let Some(owner) = &a.owner {
        queue = queue.scoped(owner.clone());
    }
    if a.once || !std::io::stdout().is_terminal() {
        print!("{}", text(&gather(&queue, a.window)?));
        return Ok(());
    }
    live(&queue, &a)
}

/// Redraws the view every interval until `q`, Esc or Ctrl-C.
fn live(queue: &Queue, a: &TopArgs) -> Done {
    let mut terminal = ratatui::init();
    let out = (|| -> Done {
        loop {
            let view = gather(queue, a.window)?;
            terminal
                .draw(|frame| draw(frame, &view))
                .map_err(|e| Refused(format!("drawing on the terminal failed: {e}")))?;
            let next = Instant::now() + a.interval;
            while let Some(left) = next.checked_duration_since(Instant::now()) {
                let ready = event::poll(left)
                    .map_err(|e| Refused(format!("reading the terminal failed: {e}")))?;
                if !ready {
                    break;
                }
                if let Ok(Event::Key(key)) = event::read() {
                    let ctrl_c = key.modifiers.contains(KeyModifiers::CONTROL)
                        && key.code == KeyCode::Char('c');
                    if key.kind == KeyEventKind::Press
                        && (ctrl_c || matches!(key.code, KeyCode::Char('q') | KeyCode::Esc))
                    {
                        return Ok(());
                    }
                }
            }
        }
    })();
    ratatui::restore();
    out
}

fn gather(queue: &Queue, window: Duration) -> Result<View, Refused> {
    let minutes = (window.as_secs() / 60).max(1);
    let window = Duration::from_secs(minutes * 60);
    let counts = queue.queues()?;
    let recent = queue.series_summary_by_queue(&SeriesQuery::new().window(window))?;
    // Every queue with jobs waiting or running, or with anything done in the window.
    let mut names: Vec<&str> = counts
        .iter()
        .map(|q| q.name.as_str())
        .chain(recent.iter().map(|(name, _)| name.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    let mut lines = Vec::with_capacity(names.len() + 1);
    let spark = |name: Option<&str>| -> Result<Vec<i64>, Refused> {
        let mut query = SeriesQuery::new().window(window);
        if let Some(name) = name {
            query = query.queue(name);
        }
        let series = queue.series(&query)?;
        Ok(series
            .points
            .iter()
            .map(|p| p.succeeded + p.failed + p.cancelled)
            .collect())
    };
    for name in names {
        let count = counts.iter().find(|q| q.name == name);
        let window = recent
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .unwrap_or_default();
        lines.push(QueueLine {
            name: name.to_string(),
            ready: count.map_or(0, |q| q.ready),
            running: count.map_or(0, |q| q.running),
            retry: count.map_or(0, |q| q.retry),
            paused: count.is_some_and(|q| q.paused),
            window,
            spark: spark(Some(name))?,
        });
    }
    let window_point = queue.series_summary(&SeriesQuery::new().window(window))?;
    let spark = spark(None)?;
    lines.push(QueueLine {
        name: "all".into(),
        ready: counts.iter().map(|q| q.ready).sum(),
        running: counts.iter().map(|q| q.running).sum(),
        retry: counts.iter().map(|q| q.retry).sum(),
        paused: false,
        window: window_point,
        spark,
    });
    let health = queue
        .health(&crate::HealthThresholds::default())
        .map(|(h, _)| h.to_string())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let title = format!(
        "jobq top  {}  health: {health}  {}  (q quits)",
        queue.location(),
        crate::Timestamp::from_millis(queue.now_ms()).to_rfc3339()
    );
    Ok(View {
        title,
        window_s: window.as_secs_f64(),
        lines,
    })
}

/// The counts as sparkline blocks, scaled to the largest.
fn sparkline(values: &[i64]) -> String {
    const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|&v| {
            if v <= 0 || max <= 0 {
                ' '
            } else {
                BLOCKS[((v * 7 + max - 1) / max).clamp(0, 7) as usize]
            }
        })
        .collect()
}

fn ms(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 10_000.0 => format!("{:.1}s", v / 1000.0),
        Some(v) => format!("{v:.0}ms"),
    }
}

/// The cells of one line.
fn cells(line: &QueueLine, window_s: f64) -> [String; 9] {
    let p = &line.window;
    let done = p.succeeded + p.failed + p.cancelled;
    let name = if line.paused {
        format!("{} (paused)", line.name)
    } else {
        line.name.clone()
    };
    [
        name,
        line.ready.to_string(),
        line.running.to_string(),
        line.retry.to_string(),
        format!("{:.2}", done as f64 / window_s),
        (p.failed + p.retried).to_string(),
        ms(p.run_ms.p95),
        ms(p.wait_ms.p95),
        sparkline(&line.spark),
    ]
}

/// The view as plain text (`--once`).
fn text(view: &View) -> String {
    let mut table = super::output::Table::new(COLUMNS);
    for line in &view.lines {
        table.row(cells(line, view.window_s));
    }
    format!(
        "{}\nthe last {}: done per second, failures (failed and retried), p95s and finished per minute\n{}",
        view.title,
        crate::format_duration(Duration::from_secs_f64(view.window_s)),
        table.render()
    )
}

fn draw(frame: &mut ratatui::Frame<'_>, view: &View) {
    let [head, body] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(1)]).areas(frame.area());
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(view.title.clone()).style(Style::new().add_modifier(Modifier::BOLD)),
            Line::from(format!(
                "the last {}: done per second, failures (failed and retried), p95s, finished per minute",
                crate::format_duration(Duration::from_secs_f64(view.window_s))
            )),
        ]),
        head,
    );
    let widths = [
        Constraint::Min(12),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Min(16),
    ];
    let rows = view.lines.iter().map(|line| {
        let row = Row::new(cells(line, view.window_s).map(Cell::from));
        if line.name == "all" {
            row.style(Style::new().add_modifier(Modifier::BOLD))
        } else {
            row
        }
    });
    let table = Table::new(rows, widths)
        .header(Row::new(COLUMNS).style(Style::new().add_modifier(Modifier::REVERSED)))
        .column_spacing(1);
    frame.render_widget(table, body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_to_the_largest() {
        assert_eq!(sparkline(&[0, 1, 2, 4, 8]), " ▂▃▅█");
        assert_eq!(sparkline(&[0, 0]), "  ");
        assert_eq!(sparkline(&[]), "");
    }
}
