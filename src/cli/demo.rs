//! `jobq demo`: the story jobq was designed from, on a fresh `jobq-demo.db`.
//!
//! A video campaign (a flow: four scenes, a voice-over and music, then the composite that
//! waits for all six) and a batch of
//! ingestion jobs with idempotency keys run in a pool of four handlers that report stages,
//! progress and costs. A few transient failures are retried with backoff; one corrupt file
//! fails for good and lands in the dead letter.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::{
    CostGrouping, Flow, HealthThresholds, JobContext, JobError, NewJob, Queue, RetryPolicy,
    StatsFilter, Status, TimingFilter, WorkerPool,
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use super::output::{Table, fmt_secs, print_json};
use super::{Done, Refused};

const DB: &str = "jobq-demo.db";

/// Runs `steps` of work, `step` long each, reporting progress (and the stage as it moves).
fn work(ctx: &JobContext, stages: &[&str], step: Duration) -> Result<(), JobError> {
    let total = stages.len() as f64;
    for (i, stage) in stages.iter().enumerate() {
        if ctx.is_cancelled() {
            return Err(JobError::retryable("cancelled"));
        }
        ctx.set_progress_and_stage(i as f64 / total, stage)?;
        std::thread::sleep(step);
    }
    ctx.set_progress(1.0)?;
    Ok(())
}

fn scene_video(ctx: &JobContext) -> Result<Value, JobError> {
    let scene = ctx.input::<Value>()?["scene"].as_u64().unwrap_or(0);
    if scene == 2 && ctx.attempt() == 1 {
        ctx.set_stage("generating")?;
        std::thread::sleep(Duration::from_millis(300));
        return Err(JobError::retryable("render farm busy (HTTP 503)").code("UPSTREAM_503"));
    }
    work(
        ctx,
        &["generating", "generating", "upscaling", "uploading"],
        Duration::from_millis(300),
    )?;
    ctx.add_cost(250)?;
    Ok(json!({"video_url": format!("s3://campaign/scene-{scene}.mp4"), "seconds": 6}))
}

fn voice_over(ctx: &JobContext) -> Result<Value, JobError> {
    work(
        ctx,
        &["writing_script", "synthesizing", "uploading"],
        Duration::from_millis(300),
    )?;
    ctx.add_cost(80)?;
    Ok(json!({"audio_url": "s3://campaign/voice.wav"}))
}

fn music(ctx: &JobContext) -> Result<Value, JobError> {
    work(
        ctx,
        &["composing", "mixing", "mastering"],
        Duration::from_millis(350),
    )?;
    ctx.add_cost(120)?;
    Ok(json!({"audio_url": "s3://campaign/music.wav"}))
}

fn composite(ctx: &JobContext) -> Result<Value, JobError> {
    // Every part has succeeded before this runs: their outputs are the composite's inputs.
    let parts = ctx.dependencies()?;
    let mut sources: Vec<String> = parts
        .values()
        .filter_map(|p| {
            p.get("video_url")
                .or_else(|| p.get("audio_url"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    sources.sort();
    if sources.len() != 6 {
        return Err(JobError::permanent(format!(
            "expected 6 parts, found {}",
            sources.len()
        )));
    }
    work(
        ctx,
        &["stitching", "encoding", "uploading"],
        Duration::from_millis(300),
    )?;
    ctx.add_cost(50)?;
    Ok(json!({"video_url": "s3://campaign/final.mp4", "duration_seconds": 30, "sources": sources}))
}

fn ingest(ctx: &JobContext) -> Result<Value, JobError> {
    let input: Value = ctx.input()?;
    let key = input["s3_key"].as_str().unwrap_or_default().to_string();
    ctx.set_progress_and_stage(0.1, "validating_input")?;
    std::thread::sleep(Duration::from_millis(120));
    if key.contains("corrupt") {
        return Err(JobError::permanent(format!(
            "{key}: moov atom not found, the file is not a video"
        ))
        .code("INVALID_VIDEO"));
    }
    if key.ends_with("ad-07.mp4") && ctx.attempt() < 3 {
        return Err(JobError::retryable(format!("S3 read timed out for {key}")).code("S3_TIMEOUT"));
    }
    ctx.set_progress_and_stage(0.4, "pipeline_running")?;
    std::thread::sleep(Duration::from_millis(200));
    ctx.set_progress_and_stage(0.9, "embedding")?;
    std::thread::sleep(Duration::from_millis(80));
    ctx.add_cost(5)?;
    Ok(
        json!({"ad_id": format!("ad_{}", key.trim_start_matches("videos/").trim_end_matches(".mp4")), "chunks": 12}),
    )
}

fn fresh_file(path: &Path) -> Result<(), Refused> {
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{}{suffix}", path.display());
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Refused(format!("cannot remove {file}: {e}"))),
        }
    }
    Ok(())
}

pub fn run(json: bool) -> Done {
    let path = Path::new(DB);
    fresh_file(path)?;
    let started = Instant::now();
    let queue = Queue::builder(path)
        .retry_policy(RetryPolicy::exponential(
            Duration::from_millis(200),
            Duration::from_secs(1),
        ))
        .open()?;
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    say(format!("jobq demo on {DB}\n"));

    queue.set_budget("acme", Some(5_000))?;
    let acme = queue.scoped("acme");
    // The campaign is a flow: the composite waits for the four scenes, the voice-over and
    // the music, and reads their outputs; all seven jobs are created in one transaction.
    let mut flow =
        Flow::new("Spring launch campaign").metadata(json!({"brand": "Acme", "scenes": 4}));
    let mut parts = Vec::new();
    for scene in 1..=4 {
        let r = format!("scene-{scene}");
        flow = flow.job(
            r.clone(),
            NewJob::new("scene_video").queue("video").input(
                json!({"scene": scene, "prompt": format!("scene {scene} of the spring launch")}),
            ),
        );
        parts.push(r);
    }
    flow = flow
        .job(
            "voice-over",
            NewJob::new("voice_over")
                .queue("video")
                .input(json!({"voice": "warm", "words": 80})),
        )
        .job(
            "music",
            NewJob::new("music")
                .queue("video")
                .input(json!({"mood": "upbeat", "seconds": 30})),
        );
    parts.extend(["voice-over".to_string(), "music".to_string()]);
    flow = flow.job_after(
        "composite",
        NewJob::new("composite")
            .queue("video")
            .input(json!({"scenes": 4})),
        parts.iter().map(String::as_str),
    );
    let created = acme.submit_flow(flow)?;
    let campaign = acme.get_group(&created.group_id)?;
    say(format!(
        "Campaign {} (flow {}): 4 scene videos, a voice-over and music, then the composite, which waits for all six",
        campaign.name, campaign.id
    ));
    let mut keys: Vec<String> = (1..=11).map(|i| format!("videos/ad-{i:02}.mp4")).collect();
    keys.push("videos/corrupt.mp4".into());
    let batch: Vec<NewJob> = keys
        .iter()
        .map(|key| {
            NewJob::new("ingest")
                .queue("ingest")
                .input(json!({"source_type": "s3", "s3_key": key}))
                .idempotency_key(format!("s3:{key}"))
        })
        .collect();
    queue.enqueue_many(batch)?;
    let again = queue.enqueue(
        NewJob::new("ingest")
            .queue("ingest")
            .input(json!({"source_type": "s3", "s3_key": "videos/ad-03.mp4"}))
            .idempotency_key("s3:videos/ad-03.mp4"),
    )?;
    say(format!(
        "Ingestion batch: {} videos; videos/ad-03.mp4 enqueued twice -> job {} (already_existed: {})\n",
        keys.len(),
        again.job_id,
        again.already_existed
    ));

    let pool = WorkerPool::builder(&queue)
        .concurrency(4)
        .queues(["video", "ingest"])
        .poll_interval(Duration::from_millis(100))
        .handler("scene_video", scene_video)
        .handler("voice_over", voice_over)
        .handler("music", music)
        .handler("composite", composite)
        .handler("ingest", ingest)
        .start()?;

    // Progress: bars on a terminal, plain lines otherwise.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let queue = queue.clone();
        let group_id = campaign.id.clone();
        let done = Arc::clone(&done);
        let bars = !json && std::io::stdout().is_terminal();
        let quiet = json;
        std::thread::spawn(move || progress(&queue, &group_id, &done, bars, quiet))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = queue.stats(&StatsFilter::new())?;
        let left = [
            Status::Blocked,
            Status::Queued,
            Status::Retry,
            Status::Running,
        ];
        if left.iter().map(|st| s.count(*st)).sum::<i64>() == 0 {
            break;
        }
        if Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let summary = pool.shutdown();
    done.store(true, Ordering::SeqCst);
    let _ = watcher.join();

    let overview = queue.overview(&StatsFilter::new(), &HealthThresholds::default())?;
    if json {
        print_json(&json!({
            "db": DB,
            "seconds": started.elapsed().as_secs_f64(),
            "pool": summary,
            "campaign": queue.get_group(&campaign.id)?,
            "deduplicated": {"job_id": again.job_id, "already_existed": again.already_existed},
            "stats": overview,
            "timing": queue.timing(&TimingFilter::new().by_kind())?,
            "costs": queue.costs(CostGrouping::Status)?,
        }));
        return Ok(());
    }
    println!(
        "\nDone in {:.1}s: {} jobs run in {} attempts, {} succeeded, {} attempts retried, {} failed for good\n",
        started.elapsed().as_secs_f64(),
        summary.processed,
        summary.attempts,
        summary.succeeded,
        summary.retried,
        summary.failed
    );

    println!("Stats");
    let mut table = Table::new(["STATUS", "JOBS"]);
    for (status, n) in &overview.stats.by_status {
        table.row([status.to_string(), n.to_string()]);
    }
    table.print();
    println!(
        "health: {}{}",
        overview.health,
        overview
            .reasons
            .iter()
            .map(|r| format!(" ({})", r.message))
            .collect::<String>()
    );

    println!("\nTiming (run time per kind)");
    let mut table = Table::new(["KIND", "STATUS", "JOBS", "P50", "P95", "WAIT P95"]);
    for t in queue.timing(&TimingFilter::new().by_kind())? {
        table.row([
            t.kind.unwrap_or_default(),
            t.status.to_string(),
            t.count.to_string(),
            fmt_secs(t.p50_seconds),
            fmt_secs(t.p95_seconds),
            fmt_secs(t.wait_p95_seconds),
        ]);
    }
    table.print();

    println!("\nCosts");
    let mut table = Table::new(["OWNER", "JOBS", "TOTAL (¢)", "SPENT (¢)", "BUDGET (¢)"]);
    for c in queue.costs(CostGrouping::Owner)? {
        let show = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        table.row([
            c.key.unwrap_or_else(|| "(none)".into()),
            c.count.to_string(),
            c.total_cost_cents.to_string(),
            show(c.spent_cents),
            show(c.budget_cents),
        ]);
    }
    table.print();

    let dead = queue.dead_letter(10)?;
    println!("\nDead letter: {} job(s)", dead.len());
    for d in &dead {
        println!(
            "  {} {} {}: {}",
            d.id,
            d.kind,
            d.error_code.as_deref().unwrap_or("-"),
            d.last_error.as_deref().unwrap_or("-")
        );
    }
    let g = queue.get_group(&campaign.id)?;
    println!("\nCampaign: stage {}, progress {:.0}%", g.stage, g.progress);
    print_flow(&queue, &created)?;
    println!("\nNext, try:");
    println!("  jobq --db {DB} list");
    println!("  jobq --db {DB} dead");
    println!(
        "  jobq --db {DB} show {}",
        dead.first()
            .map_or_else(|| again.job_id.to_string(), |d| d.id.to_string())
    );
    println!("  jobq --db {DB} timing --by-kind");
    println!("  jobq --db {DB} serve --insecure-no-auth    # then open http://127.0.0.1:8080/");
    Ok(())
}

/// The flow as it ran: each job with when it started and ended, the composite last, and
/// the time from the last part's success to the composite's start.
fn print_flow(queue: &Queue, created: &crate::FlowCreated) -> Done {
    let mut rows = Vec::new();
    for (r, id) in &created.jobs {
        let job = queue.get(id)?;
        rows.push((r.clone(), job));
    }
    rows.sort_by_key(|(_, j)| (j.completed_at, j.id.clone()));
    let Some(start) = rows.iter().filter_map(|(_, j)| j.created_at.into()).min() else {
        return Ok(());
    };
    let at = |t: Option<crate::Timestamp>| {
        t.map_or_else(
            || "-".to_string(),
            |t| {
                format!(
                    "{:.2}s",
                    (t.as_millis() - start.as_millis()) as f64 / 1000.0
                )
            },
        )
    };
    println!("\nThe flow (times from its submission)");
    let mut table = Table::new(["REF", "KIND", "STATUS", "WAITS FOR", "STARTED", "ENDED"]);
    for (r, job) in &rows {
        let waits = job.dependencies.as_ref().map_or(0, Vec::len);
        table.row([
            r.clone(),
            job.kind.clone(),
            job.status.to_string(),
            if waits == 0 {
                "-".into()
            } else {
                format!("{waits} jobs")
            },
            at(job.started_at),
            at(job.completed_at),
        ]);
    }
    table.print();
    if let Some((_, composite)) = rows.iter().find(|(r, _)| r == "composite") {
        let last_part = rows
            .iter()
            .filter(|(r, _)| r != "composite")
            .filter_map(|(_, j)| j.completed_at)
            .max();
        if let (Some(last), Some(started)) = (last_part, composite.started_at) {
            println!(
                "composite started {} ms after its last part succeeded",
                started.as_millis() - last.as_millis()
            );
        }
    }
    Ok(())
}

/// Shows the campaign's progress and the whole queue's until `done`.
fn progress(queue: &Queue, group_id: &str, done: &AtomicBool, bars: bool, quiet: bool) {
    let read = || -> Option<(f64, String, i64, i64)> {
        let g = queue.get_group(group_id).ok()?;
        let s = queue.stats(&StatsFilter::new()).ok()?;
        let finished =
            s.count(Status::Succeeded) + s.count(Status::Failed) + s.count(Status::Cancelled);
        Some((g.progress, g.stage.to_string(), finished, s.total))
    };
    if bars {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let style =
            ProgressStyle::with_template("{prefix:>9} [{bar:40.cyan/blue}] {pos:>3}/{len:3} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        let campaign = multi.add(
            ProgressBar::new(100)
                .with_style(style.clone())
                .with_prefix("campaign"),
        );
        let whole = multi.add(ProgressBar::new(1).with_style(style).with_prefix("queue"));
        super::output::show_bars(&multi);
        loop {
            if let Some((pct, stage, finished, total)) = read() {
                campaign.set_position(pct.round() as u64);
                campaign.set_message(format!("% {stage}"));
                whole.set_length(total.max(1) as u64);
                whole.set_position(finished as u64);
                whole.set_message("jobs finished".to_string());
            }
            if done.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        campaign.finish();
        whole.finish();
        super::output::hide_bars();
        return;
    }
    let mut last = String::new();
    loop {
        let finished = done.load(Ordering::SeqCst);
        if let Some((pct, stage, done_jobs, total)) = read() {
            let line =
                format!("campaign {pct:>5.1}% ({stage}) | queue {done_jobs}/{total} jobs finished");
            if !quiet && line != last {
                println!("{line}");
                last = line;
            }
        }
        if finished {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
