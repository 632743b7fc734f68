//! The dashboard in a real browser: headless Chromium driven through WebDriver
//! (chromedriver) signs in with the admin key, sees the jobs, cancels one through the UI,
//! and the database changes; on a server without auth it needs no sign-in. A screenshot is saved under `target/` for people to look at.
//!
//! Needs Debian's `chromium` and `chromium-driver`, which `.ci/run` installs. Elsewhere the
//! test says it is skipping, unless `JOBQ_REQUIRE_BROWSER=1` makes their absence a failure.

use std::io::BufRead;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use jobq::{ClaimFilter, JobError, NewJob, Queue, Status};
use serde_json::json;

const KEY: &str = "browser-test-admin-key";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether Chromium and chromedriver are here; without them a test says it skips, unless
/// `JOBQ_REQUIRE_BROWSER` makes that a failure.
fn browser_available() -> bool {
    if PathBuf::from(CHROMIUM).exists() && PathBuf::from(CHROMEDRIVER).exists() {
        return true;
    }
    assert!(
        std::env::var_os("JOBQ_REQUIRE_BROWSER").is_none(),
        "JOBQ_REQUIRE_BROWSER is set but {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install -y chromium chromium-driver)"
    );
    eprintln!(
        "skipping the browser test: {CHROMIUM} and {CHROMEDRIVER} are not installed (apt-get install -y chromium chromium-driver)"
    );
    false
}

/// `jobq serve` on `db` with the admin key, as users run it; returns it and its address.
fn serve(db: &std::path::Path) -> (Killed, String) {
    let mut serve = Command::new(env!("CARGO_BIN_EXE_jobq"))
        .arg("--db")
        .arg(db)
        .args(["serve", "--addr", "127.0.0.1:0", "--admin-key", KEY])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    (Killed(serve), addr)
}

/// chromedriver on a free port.
fn chromedriver() -> (Killed, u16) {
    let port = free_port();
    let driver = Killed(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("chromedriver", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (driver, port)
}

/// A headless Chromium session whose page is `width` × `height` CSS pixels: a desktop
/// window, or below 500 px (the narrowest window headless Chromium opens) a phone's screen,
/// emulated.
async fn session(
    port: u16,
    profile: &std::path::Path,
    width: u32,
    height: u32,
) -> fantoccini::Client {
    let mut options = json!({
        "binary": CHROMIUM,
        "args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
            format!("--window-size={},{}", width.max(500), height),
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    if width < 500 {
        options["mobileEmulation"] = json!({
            "deviceMetrics": {"width": width, "height": height, "pixelRatio": 3.0, "touch": true},
        });
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session with headless Chromium")
}

/// Signs in with the admin key on the page at `url`.
async fn sign_in(client: &fantoccini::Client, url: &str) {
    client.goto(url).await.unwrap();
    let key = client
        .wait()
        .for_element(Locator::Css("[data-testid=login-key]"))
        .await
        .unwrap();
    key.send_keys(KEY).await.unwrap();
    client
        .find(Locator::Css("[data-testid=login-submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

#[test]
fn the_dashboard_signs_in_shows_jobs_and_cancels_one() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let queue = Queue::open(&db).unwrap();
    let campaign = queue.create_group("Spring launch", None).unwrap();
    let mut ids = Vec::new();
    for scene in 1..=3 {
        ids.push(
            queue
                .enqueue(
                    NewJob::new("scene_video")
                        .input(json!({"scene": scene}))
                        .group(&campaign.id),
                )
                .unwrap()
                .job_id,
        );
    }
    let dead = queue
        .enqueue(NewJob::new("ingest").max_attempts(1))
        .unwrap()
        .job_id;
    let lease = queue
        .claim("w", 1, &ClaimFilter::default().kinds(["ingest"]))
        .unwrap()[0]
        .lease();
    assert_eq!(lease.job_id, dead);
    queue
        .fail(
            &lease,
            &JobError::permanent("moov atom not found").code("INVALID_VIDEO"),
        )
        .unwrap();

    let (_serve, addr) = serve(&db);
    let (_driver, port) = chromedriver();

    let profile = tempfile::tempdir().unwrap();
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cancelled_id = ids[0].clone();
    runtime.block_on(async {
        let client = session(port, profile.path(), 1400, 900).await;
        client.goto(&format!("http://{addr}/")).await.unwrap();

        // A wrong key is refused on the page.
        let key = client
            .wait()
            .for_element(Locator::Css("[data-testid=login-key]"))
            .await
            .unwrap();
        key.send_keys("not-the-key").await.unwrap();
        client
            .find(Locator::Css("[data-testid=login-submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let error = client
            .wait()
            .for_element(Locator::Css("#login-error"))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while error.text().await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no message for a wrong key");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The right key shows the jobs, the counts and the health.
        let key = client
            .find(Locator::Css("[data-testid=login-key]"))
            .await
            .unwrap();
        key.clear().await.unwrap();
        key.send_keys(KEY).await.unwrap();
        client
            .find(Locator::Css("[data-testid=login-submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let row = format!("tr[data-job-id='{cancelled_id}']");
        client.wait().for_element(Locator::Css(&row)).await.unwrap();
        let rows = client
            .find_all(Locator::Css("tr[data-job-id]"))
            .await
            .unwrap();
        assert_eq!(rows.len(), 4, "the four jobs are listed");
        let failed = client
            .find(Locator::Css("[data-testid=count-failed] .n"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(failed, "1");
        let health = client
            .find(Locator::Css("[data-testid=health]"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(health.to_lowercase(), "degraded");

        // Open the job and cancel it through the UI.
        client
            .find(Locator::Css(&row))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let detail = client
            .wait()
            .for_element(Locator::Css(
                "[data-testid=job-detail] [data-testid=cancel]",
            ))
            .await
            .unwrap();
        let drawer = client
            .find(Locator::Css("[data-testid=job-detail]"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            drawer.contains(cancelled_id.as_str()) && drawer.contains("\"scene\": 1"),
            "{drawer}"
        );
        detail.click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while queue.get(&cancelled_id).unwrap().status != Status::Cancelled {
            assert!(
                Instant::now() < deadline,
                "the cancel never reached the database"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The page shows it too, after its refresh.
        let pill = format!("{row} .pill.cancelled");
        client
            .wait()
            .for_element(Locator::Css(&pill))
            .await
            .unwrap();

        let png = client.screenshot().await.unwrap();
        std::fs::write(&shot, &png).unwrap();

        // A server without auth (`serve --insecure-no-auth`) shows the jobs with no sign-in.
        let open = jobq::http::Server::start(
            queue.clone(),
            jobq::http::ServerConfig::new("127.0.0.1:0").insecure_no_auth(),
        )
        .unwrap();
        client
            .goto(&format!("http://{}/", open.addr()))
            .await
            .unwrap();
        client
            .wait()
            .for_element(Locator::Css(&pill))
            .await
            .unwrap();
        let login = client.find(Locator::Css("#login")).await.unwrap();
        assert!(
            !login.is_displayed().await.unwrap(),
            "no sign-in form on an open server"
        );
        let logout = client.find(Locator::Css("#logout")).await.unwrap();
        assert!(
            !logout.is_displayed().await.unwrap(),
            "nothing to sign out of"
        );
        client.close().await.unwrap();
        open.shutdown();
    });
    assert_eq!(queue.get(&cancelled_id).unwrap().status, Status::Cancelled);
    for id in &ids[1..] {
        assert_eq!(
            queue.get(id).unwrap().status,
            Status::Queued,
            "only the one job was cancelled"
        );
    }
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real screenshot at {}",
        shot.display()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
}

/// Whether an element lies wholly within the first `width` pixels of the page.
async fn within(element: &fantoccini::elements::Element, width: f64) -> bool {
    let (x, _, w, _) = element.rectangle().await.unwrap();
    x >= 0.0 && x + w <= width
}

#[test]
fn the_dashboard_works_at_phone_width_and_keeps_its_state_in_the_url() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let queue = Queue::open(&db).unwrap();
    let campaign = queue.create_group("Spring launch", None).unwrap();
    for scene in 1..=2 {
        queue
            .enqueue(
                NewJob::new("scene_video")
                    .input(json!({"scene": scene}))
                    .group(&campaign.id),
            )
            .unwrap();
    }
    let later = queue
        .enqueue(NewJob::new("newsletter").run_after(Duration::from_secs(3600)))
        .unwrap()
        .job_id;
    let mut dead = Vec::new();
    for n in 0..3 {
        let id = queue
            .enqueue(
                NewJob::new("ingest")
                    .input(json!({"file": format!("videos/a-very-long-file-name-that-would-not-fit-{n}.mp4")}))
                    .max_attempts(1),
            )
            .unwrap()
            .job_id;
        let lease = queue
            .claim("w", 1, &ClaimFilter::default().kinds(["ingest"]))
            .unwrap()[0]
            .lease();
        queue
            .fail(
                &lease,
                &JobError::permanent("moov atom not found in a file whose name is long")
                    .code("INVALID_VIDEO"),
            )
            .unwrap();
        dead.push(id);
    }
    // A pool that is up, for the workers tab (it serves a kind no job has).
    let pool = jobq::WorkerPool::builder(&queue)
        .worker_id("phone-test-worker")
        .handler(
            "nothing",
            |_: &jobq::JobContext| -> Result<serde_json::Value, JobError> {
                Ok(serde_json::Value::Null)
            },
        )
        .start()
        .unwrap();
    let (_serve, addr) = serve(&db);
    let (_driver, port) = chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-phone.png");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = session(port, profile.path(), 390, 844).await;
        // A link to the dead letter opens it.
        sign_in(&client, &format!("http://{addr}/#tab=dead")).await;
        let retry = client.wait().for_element(Locator::Css("#dead [data-testid=retry]")).await.unwrap();
        let width: f64 = number(&client, "return window.innerWidth").await;
        assert!(width <= 400.0, "the page is laid out {width} px wide");
        assert!(within(&retry, width).await, "the dead letter's Retry lies beyond the screen");
        let page_width: f64 = number(&client, "return document.documentElement.scrollWidth").await;
        assert!(page_width <= width + 1.0, "the page is {page_width} px wide on a {width} px screen");
        // Retry one from the phone.
        retry.click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while dead.iter().filter(|id| queue.get(id).unwrap().status == Status::Queued).count() != 1 {
            assert!(Instant::now() < deadline, "the retry never reached the database");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let png = client.screenshot().await.unwrap();
        std::fs::write(&shot, &png).unwrap();
        // Retry all the rest.
        let all = client.find(Locator::Css("[data-testid=retry-all]")).await.unwrap();
        assert!(within(&all, width).await);
        all.click().await.unwrap();
        client.accept_alert().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dead.iter().all(|id| queue.get(id).unwrap().status == Status::Queued) {
            assert!(Instant::now() < deadline, "retry all never reached the database");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The jobs tab: a job waiting for its run_after shows as scheduled, in the list and
        // in the counts.
        client.find(Locator::Css("#tabs [data-tab=jobs]")).await.unwrap().click().await.unwrap();
        let scheduled_row = format!("tr[data-job-id='{later}'] .pill.scheduled");
        client.wait().for_element(Locator::Css(&scheduled_row)).await.unwrap();
        let scheduled = client.find(Locator::Css("[data-testid=count-scheduled] .n")).await.unwrap().text().await.unwrap();
        assert_eq!(scheduled, "1");
        assert!(client.current_url().await.unwrap().fragment().unwrap_or("").is_empty());

        // Opening a job puts it in the URL; Back closes it; Forward opens it again.
        let row = format!("tr[data-job-id='{later}']");
        client.find(Locator::Css(&row)).await.unwrap().click().await.unwrap();
        let detail = client.wait().for_element(Locator::Css("[data-testid=job-detail] [data-testid=cancel]")).await.unwrap();
        assert!(within(&detail, width).await, "the job's Cancel lies beyond the screen");
        let url = client.current_url().await.unwrap();
        assert!(url.fragment().unwrap_or("").contains(later.as_str()), "{url}");
        client.back().await.unwrap();
        let drawer = client.find(Locator::Css("[data-testid=job-detail]")).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while drawer.is_displayed().await.unwrap() {
            assert!(Instant::now() < deadline, "Back did not close the job");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client.forward().await.unwrap();
        client.wait().for_element(Locator::Css("[data-testid=job-detail] [data-testid=cancel]")).await.unwrap();
        assert!(drawer.is_displayed().await.unwrap(), "Forward did not open the job");

        // A link to the job opens it in a fresh page.
        client.goto(url.as_str()).await.unwrap();
        client.refresh().await.unwrap();
        client.wait().for_element(Locator::Css("[data-testid=job-detail] [data-testid=cancel]")).await.unwrap();
        let text = client.find(Locator::Css("[data-testid=job-detail]")).await.unwrap().text().await.unwrap();
        assert!(text.contains(later.as_str()) && text.contains("newsletter"), "{text}");
        client.find(Locator::Css("[data-testid=job-detail] button")).await.unwrap();
        client.execute("document.querySelector('[data-testid=job-detail] .actions button:last-child').click()", vec![]).await.unwrap();

        // The workers tab lists the pools that are up.
        client.goto(&format!("http://{addr}/#tab=workers")).await.unwrap();
        client.refresh().await.unwrap();
        client
            .wait()
            .for_element(Locator::XPath("//tbody[@id='workers']//td[text()='phone-test-worker']"))
            .await
            .unwrap();

        // A group's row opens its jobs.
        client.goto(&format!("http://{addr}/#tab=groups")).await.unwrap();
        client.refresh().await.unwrap();
        let group_row = format!("tr[data-group-id='{}']", campaign.id);
        client.wait().for_element(Locator::Css(&group_row)).await.unwrap().click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rows = client.find_all(Locator::Css("tr[data-job-id]")).await.unwrap();
            let url = client.current_url().await.unwrap();
            if rows.len() == 2 && url.fragment().unwrap_or("").contains(&campaign.id) {
                break;
            }
            assert!(Instant::now() < deadline, "the group's row did not open its 2 jobs: {} rows at {url}", rows.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        client.close().await.unwrap();
    });
    pool.shutdown();
    assert!(std::fs::metadata(&shot).unwrap().len() > 5_000);
    eprintln!("phone screenshot: {}", shot.display());
}

/// Waits until `css` matches `n` elements.
async fn wait_count(
    client: &fantoccini::Client,
    css: &str,
    n: usize,
) -> Vec<fantoccini::elements::Element> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = client.find_all(Locator::Css(css)).await.unwrap();
        if found.len() == n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{css}: {} elements, not {n}",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_dashboard_shows_a_flow_by_level_a_jobs_dependencies_and_the_schedules() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let queue = Queue::open(&db).unwrap();
    let created = queue
        .submit_flow(
            jobq::Flow::new("Spring launch")
                .job("scene-1", NewJob::new("scene_video"))
                .job("scene-2", NewJob::new("scene_video"))
                .job("music", NewJob::new("music"))
                .job_after(
                    "composite",
                    NewJob::new("composite"),
                    ["scene-1", "scene-2", "music"],
                ),
        )
        .unwrap();
    let composite = created.jobs["composite"].clone();
    queue
        .add_schedule(jobq::NewSchedule::cron("nightly", "0 2 * * *", "report"))
        .unwrap();
    let (_serve, addr) = serve(&db);
    let (_driver, port) = chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = session(port, profile.path(), 1400, 900).await;
        sign_in(&client, &format!("http://{addr}/")).await;
        client
            .wait()
            .for_element(Locator::Css("[data-testid=count-blocked]"))
            .await
            .unwrap();
        let blocked = client
            .find(Locator::Css("[data-testid=count-blocked] .n"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(blocked, "1");
        // Groups tab → the group's Flow button → its jobs in two levels.
        client
            .find(Locator::Css("#tabs button[data-tab=groups]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let open = client
            .wait()
            .for_element(Locator::Css("[data-testid=open-flow]"))
            .await
            .unwrap();
        open.click().await.unwrap();
        let levels = wait_count(&client, "[data-testid=flow-level]", 2).await;
        let last = levels[1]
            .find_all(Locator::Css("[data-testid=flow-node]"))
            .await
            .unwrap();
        assert_eq!(last.len(), 1, "the composite comes after the others");
        assert_eq!(
            last[0].attr("data-job-id").await.unwrap().as_deref(),
            Some(composite.as_str())
        );
        let text = last[0].text().await.unwrap();
        assert!(
            text.contains("blocked") && text.contains("waits for"),
            "{text}"
        );
        assert_eq!(
            levels[0]
                .find_all(Locator::Css("[data-testid=flow-node]"))
                .await
                .unwrap()
                .len(),
            3
        );
        let url = client.current_url().await.unwrap();
        assert!(url.as_str().contains(&created.group_id), "{url}");
        // The composite's page lists what it waits for, with their statuses.
        last[0].click().await.unwrap();
        let deps = wait_count(&client, "[data-testid=dependencies] li", 3).await;
        let first = deps[0].text().await.unwrap();
        assert!(first.contains("queued"), "{first}");
        // One of them opens its own page, which lists the composite as waiting for it.
        deps[0].click().await.unwrap();
        let dependents = wait_count(&client, "[data-testid=dependents] li", 1).await;
        let text = dependents[0].text().await.unwrap();
        assert!(
            text.contains("composite") && text.contains("blocked"),
            "{text}"
        );

        // The Schedules tab: the schedule with its next fire; Pause pauses it.
        client
            .find(Locator::Css("[data-testid=close-job]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        client
            .find(Locator::Css("[data-testid=schedules-tab]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let text = text_of(&client, "tr[data-schedule=nightly]").await;
        assert!(
            text.contains("0 2 * * *") && text.contains("report"),
            "{text}"
        );
        click(
            &client,
            "tr[data-schedule=nightly] [data-testid=pause-schedule]",
        )
        .await;
        client
            .wait()
            .for_element(Locator::Css("[data-testid=resume-schedule]"))
            .await
            .unwrap();

        // The Queues tab: counts and limits; Pause pauses the queue for every process.
        client
            .find(Locator::Css("[data-testid=queues-tab]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // Found again whenever the page redraws the table in between (its refresh).
        let text = text_of(&client, "tr[data-queue=default]").await;
        assert!(text.contains("default"), "{text}");
        click(&client, "tr[data-queue=default] [data-testid=pause-queue]").await;
        client
            .wait()
            .for_element(Locator::Css("[data-testid=resume-queue]"))
            .await
            .unwrap();
        client.close().await.unwrap();
    });
    assert!(queue.schedule("nightly").unwrap().paused);
    assert!(queue.queue_info("default").unwrap().paused);
}

/// A number the page's script returns.
async fn number(client: &fantoccini::Client, script: &str) -> f64 {
    client
        .execute(script, vec![])
        .await
        .unwrap()
        .as_f64()
        .unwrap_or_else(|| panic!("{script} returned no number"))
}

/// Whether a command failed because the page redrew the element meanwhile (the dashboard
/// re-renders a list when it refreshes): the element is looked up again.
fn is_stale(e: &fantoccini::error::CmdError) -> bool {
    matches!(
        e,
        fantoccini::error::CmdError::Standard(w)
            if w.error == fantoccini::error::ErrorStatus::StaleElementReference
    )
}

/// The text of the first element `css` finds, once it is there (found again if the page
/// redraws it in between).
async fn text_of(client: &fantoccini::Client, css: &str) -> String {
    for _ in 0..100 {
        let element = client.wait().for_element(Locator::Css(css)).await.unwrap();
        match element.text().await {
            Ok(text) => return text,
            Err(e) if is_stale(&e) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("reading {css}: {e}"),
        }
    }
    panic!("{css} kept being redrawn");
}

/// An attribute of every element `css` finds, read again whole if the page redraws one of
/// them in between.
async fn attrs_of(client: &fantoccini::Client, css: &str, name: &str) -> Vec<Option<String>> {
    'again: for _ in 0..100 {
        let elements = client.find_all(Locator::Css(css)).await.unwrap();
        let mut values = Vec::with_capacity(elements.len());
        for e in &elements {
            match e.attr(name).await {
                Ok(v) => values.push(v),
                Err(err) if is_stale(&err) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue 'again;
                }
                Err(err) => panic!("reading {name} of {css}: {err}"),
            }
        }
        return values;
    }
    panic!("{css} kept being redrawn");
}

/// The text of every element `css` finds, read again whole if the page redraws one of them
/// in between.
async fn texts_of(client: &fantoccini::Client, css: &str) -> Vec<String> {
    'again: for _ in 0..100 {
        let elements = client.find_all(Locator::Css(css)).await.unwrap();
        let mut texts = Vec::with_capacity(elements.len());
        for e in &elements {
            match e.text().await {
                Ok(t) => texts.push(t),
                Err(err) if is_stale(&err) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue 'again;
                }
                Err(err) => panic!("reading {css}: {err}"),
            }
        }
        return texts;
    }
    panic!("{css} kept being redrawn");
}

/// Clicks the first element `css` finds, once it is there (found again if the page
/// redraws it in between).
async fn click(client: &fantoccini::Client, css: &str) {
    for _ in 0..100 {
        let element = client.wait().for_element(Locator::Css(css)).await.unwrap();
        match element.click().await {
            Ok(_) => return,
            Err(e) if is_stale(&e) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("clicking {css}: {e}"),
        }
    }
    panic!("{css} kept being redrawn");
}

/// Waits until `check` holds of the database.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn the_dashboard_finds_selects_and_acts_on_jobs_and_reads_at_a_glance() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let queue = Queue::open(&db).unwrap();
    let picked: Vec<_> = (0..2)
        .map(|i| {
            queue
                .enqueue(NewJob::new("bulk").input(json!({"i": i})))
                .unwrap()
                .job_id
        })
        .collect();
    let keyed = queue
        .enqueue(NewJob::new("mail").idempotency_key("welcome-ada"))
        .unwrap()
        .job_id;
    // A failed job with a traceback, in no group.
    let failed = queue
        .enqueue(NewJob::new("py").max_attempts(1))
        .unwrap()
        .job_id;
    let lease = queue
        .claim("w", 1, &ClaimFilter::default().kinds(["py"]))
        .unwrap()[0]
        .lease();
    queue
        .fail(
            &lease,
            &JobError::permanent("ValueError: bad input")
                .code("ValueError")
                .detail("Traceback (most recent call last):\n  File \"h.py\", line 3\nValueError: bad input"),
        )
        .unwrap();
    // A running job with a concurrency key.
    queue
        .enqueue(
            NewJob::new("render")
                .queue("gpu")
                .concurrency_key("customer-7"),
        )
        .unwrap();
    queue
        .claim("gpu-worker", 1, &ClaimFilter::queues(["gpu"]))
        .unwrap();
    let created = queue
        .submit_flow(
            jobq::Flow::new("launch")
                .job("scene", NewJob::new("scene").queue("flows"))
                .job("music", NewJob::new("music").queue("flows"))
                .job_after(
                    "final",
                    NewJob::new("composite").queue("flows"),
                    ["scene", "music"],
                ),
        )
        .unwrap();
    queue
        .add_schedule(jobq::NewSchedule::cron("nightly", "0 2 * * *", "report"))
        .unwrap();

    let (_serve, addr) = serve(&db);
    let (_driver, port) = chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = session(port, profile.path(), 1400, 900).await;
        sign_in(&client, &format!("http://{addr}/")).await;

        // Health reasons in words; a count opens its list.
        let reason = text_of(&client, "[data-testid=reason]").await;
        assert!(reason.contains("Jobs in the dead letter"), "{reason}");
        click(&client, "[data-testid=count-failed]").await;
        wait_count(&client, "#jobs tr[data-job-id]", 1).await;
        let row = text_of(&client, "#jobs tr[data-job-id]").await;
        assert!(row.contains("py") && row.contains("failed"), "{row}");
        // Times read relative, the exact time on hover.
        let shown = text_of(&client, "#jobs time").await;
        assert!(shown.ends_with("ago") || shown == "now", "{shown}");
        let exact = attrs_of(&client, "#jobs time", "title").await;
        assert!(
            exact[0].as_ref().is_some_and(|t| !t.is_empty()),
            "{exact:?}"
        );

        // The failed job's page: the error and its traceback in <pre>, no stray null.
        click(&client, &format!("#jobs tr[data-job-id='{failed}']")).await;
        let error = text_of(&client, "[data-testid=attempt-error]").await;
        assert!(
            error.contains("ValueError: bad input") && error.contains("Traceback"),
            "{error}"
        );
        let drawer = text_of(&client, "[data-testid=job-detail]").await;
        assert!(!drawer.contains("null"), "{drawer}");
        click(&client, "[data-testid=close-job]").await;

        // Search by idempotency key.
        click(&client, "[data-testid=count-total]").await;
        let search = client
            .find(Locator::Css("[data-testid=search]"))
            .await
            .unwrap();
        search.send_keys("welcome-ada\n").await.unwrap();
        wait_count(&client, "#jobs tr[data-job-id]", 1).await;
        assert_eq!(
            attrs_of(&client, "#jobs tr[data-job-id]", "data-job-id").await,
            vec![Some(keyed.to_string())]
        );
        search.clear().await.unwrap();

        // Multi-select two jobs, cancel them together.
        click(&client, "[data-testid=count-queued]").await;
        for id in &picked {
            click(&client, &format!("input.pick[data-job-id='{id}']")).await;
        }
        let count = text_of(&client, "#selected-count").await;
        assert_eq!(count, "2 jobs selected");
        click(&client, "[data-testid=bulk-cancel]").await;
        until("both jobs cancelled", || {
            picked
                .iter()
                .all(|id| queue.get(id).unwrap().status == Status::Cancelled)
        })
        .await;

        // The running list shows the concurrency key.
        click(&client, "#tabs button[data-tab=running]").await;
        assert_eq!(
            text_of(&client, "[data-testid=running-key]").await,
            "customer-7"
        );

        // Limits set from the Queues tab.
        click(&client, "[data-testid=queues-tab]").await;
        click(&client, "tr[data-queue=gpu] [data-testid=edit-limits]").await;
        let max = client
            .wait()
            .for_element(Locator::Css("[data-testid=limit-max_running]"))
            .await
            .unwrap();
        max.send_keys("3").await.unwrap();
        client
            .find(Locator::Css("[data-testid=limit-rate]"))
            .await
            .unwrap()
            .send_keys("100/1m")
            .await
            .unwrap();
        click(&client, "[data-testid=save-limits]").await;
        until("the limits saved", || {
            let q = queue.queue_info("gpu").unwrap();
            q.max_running == Some(3) && q.rate.is_some()
        })
        .await;

        // A schedule run now.
        click(&client, "[data-testid=schedules-tab]").await;
        click(
            &client,
            "tr[data-schedule=nightly] [data-testid=run-schedule]",
        )
        .await;
        until("the schedule's job", || {
            !queue
                .list(&jobq::JobFilter::new().kind("report"))
                .unwrap()
                .jobs
                .is_empty()
        })
        .await;

        // A flow draws its edges, its nodes named by ref.
        client
            .goto(&format!(
                "http://{addr}/#tab=flow&flow={}",
                created.group_id
            ))
            .await
            .unwrap();
        wait_count(&client, "[data-testid=flow-edges] path", 2).await;
        let to = attrs_of(&client, "[data-testid=flow-edges] path", "data-to").await;
        assert!(
            to.len() == 2
                && to
                    .iter()
                    .all(|t| t.as_deref() == Some(created.jobs["final"].as_str())),
            "{to:?}"
        );
        let names = texts_of(&client, "[data-testid=flow-node]").await;
        assert!(names.iter().any(|n| n.contains("final")), "{names:?}");
        client.close().await.unwrap();
    });
}

#[test]
fn the_dashboards_charts_agree_with_the_series_on_a_wide_screen_and_a_phone() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let queue = Queue::open(&db).unwrap();
    queue
        .enqueue_many((0..12).map(|i| NewJob::new("render").input(json!({"n": i})).max_attempts(3)))
        .unwrap();
    let claimed = queue.claim("w", 11, &ClaimFilter::default()).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    for job in &claimed[..8] {
        queue.complete(&job.lease(), json!({"ok": true})).unwrap();
    }
    for job in &claimed[8..10] {
        queue
            .fail(
                &job.lease(),
                &JobError::permanent("bad frame").code("BAD_FRAME"),
            )
            .unwrap();
    }
    queue
        .fail(&claimed[10].lease(), &JobError::retryable("busy"))
        .unwrap();
    let (_serve, addr) = serve(&db);
    let (_driver, port) = chromedriver();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (width, height, name) in [
        (1280, 900, "dashboard-charts.png"),
        (390, 844, "dashboard-charts-phone.png"),
    ] {
        let profile = tempfile::tempdir().unwrap();
        runtime.block_on(async {
            let client = session(port, profile.path(), width, height).await;
            sign_in(&client, &format!("http://{addr}/")).await;
            for span in ["1h", "24h"] {
                if span != "1h" {
                    let select = client.find(Locator::Css("[data-testid=series-window]")).await.unwrap();
                    select.select_by_value(span).await.unwrap();
                }
                // What the series says, read the way the page reads it.
                let step = if span == "1h" { 60 } else { 900 };
                let series = queue
                    .series(
                        &jobq::SeriesQuery::new()
                            .window(jobq::parse_duration(span).unwrap())
                            .step(Duration::from_secs(step)),
                    )
                    .unwrap();
                let total = |f: &dyn Fn(&jobq::SeriesPoint) -> i64| -> String {
                    series.points.iter().map(f).sum::<i64>().to_string()
                };
                let expect = [
                    ("arrived-total", total(&|p| p.enqueued)),
                    ("done-total", total(&|p| p.succeeded + p.failed + p.cancelled)),
                    ("failed-total", total(&|p| p.failed)),
                    ("retried-total", total(&|p| p.retried)),
                ];
                assert_eq!(
                    expect.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>(),
                    ["12", "10", "2", "1"]
                );
                let steps = format!("{} steps", series.points.len());
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    let info = text_of(&client, "#series-info").await;
                    let mut shown = Vec::new();
                    for (id, _) in &expect {
                        shown.push(text_of(&client, &format!("[data-testid={id}]")).await);
                    }
                    if info.starts_with(&steps)
                        && shown.iter().zip(&expect).all(|(s, (_, v))| s == v)
                    {
                        break;
                    }
                    if Instant::now() > deadline {
                        let refreshed = text_of(&client, "#refreshed").await;
                        panic!("{width} px, {span}: the charts show {info:?} {shown:?}, the series {steps} {expect:?} ({refreshed})");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // The lines are drawn; the arrivals outran the completions in one step, which is
                // shaded; one bar per step with failures.
                assert_eq!(attrs_of(&client, "#chart-flow path.arrived", "d").await.len(), 1);
                assert_eq!(attrs_of(&client, "#chart-flow path.done", "d").await.len(), 1);
                assert!(!attrs_of(&client, "#chart-flow polygon.backlog", "points").await.is_empty());
                let failing_steps = series.points.iter().filter(|p| p.failed > 0).count();
                assert_eq!(
                    attrs_of(&client, "#chart-failures rect.failed", "data-t").await.len(),
                    failing_steps
                );
                assert!(!attrs_of(&client, "#chart-latency path.p95", "d").await.is_empty());
                let p95 = text_of(&client, "[data-testid=run-p95]").await;
                assert!(p95 != "-", "the last run p95 is shown: {p95}");
            }
            // Picking the step the jobs arrived in lists them, and only them; an empty step
            // lists nothing; the chip clears the range.
            if width > 1000 {
                client
                    .find(Locator::Css("[data-testid=series-window]"))
                    .await
                    .unwrap()
                    .select_by_value("1h")
                    .await
                    .unwrap();
                let series = queue.series(&jobq::SeriesQuery::new()).unwrap();
                let busy = series.points.iter().find(|p| p.enqueued > 0).unwrap().t.to_rfc3339();
                let idle = series.points.iter().find(|p| p.enqueued == 0).unwrap().t.to_rfc3339();
                let pick = |t: String| format!("#chart-flow rect.pick[data-t='{t}']");
                click(&client, &pick(busy.clone())).await;
                let deadline = Instant::now() + Duration::from_secs(20);
                while attrs_of(&client, "#jobs tr[data-job-id]", "data-job-id").await.len() != 12 {
                    assert!(Instant::now() < deadline, "picking the busy step did not list its 12 jobs");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                assert!(text_of(&client, "[data-testid=range]").await.starts_with("created"));
                let url = client.current_url().await.unwrap();
                assert!(url.fragment().unwrap_or("").contains("created_from"), "{url}");
                click(&client, &pick(idle)).await;
                let deadline = Instant::now() + Duration::from_secs(20);
                while !texts_of(&client, "#jobs td.empty").await.iter().any(|t| t == "No jobs match.") {
                    assert!(Instant::now() < deadline, "an empty step still lists jobs");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                click(&client, "[data-testid=range]").await;
                let deadline = Instant::now() + Duration::from_secs(20);
                while attrs_of(&client, "#jobs tr[data-job-id]", "data-job-id").await.len() != 12 {
                    assert!(Instant::now() < deadline, "clearing the range did not list every job");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            // Each chart fits the screen.
            let inner: f64 = number(&client, "return window.innerWidth").await;
            for chart in ["chart-flow", "chart-latency", "chart-failures"] {
                let svg = client.find(Locator::Id(chart)).await.unwrap();
                assert!(within(&svg, inner).await, "{chart} lies beyond a {inner} px screen");
            }
            let page_width: f64 = number(&client, "return document.documentElement.scrollWidth").await;
            assert!(page_width <= inner + 1.0, "the page is {page_width} px wide on {inner} px");
            let png = client.screenshot().await.unwrap();
            std::fs::write(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name), &png).unwrap();
            client.close().await.unwrap();
        });
    }
}

#[test]
fn the_dashboard_lists_a_job_s_steps_and_what_it_waits_for() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.db");
    let queue = Queue::open(&db).unwrap();
    let id = queue.enqueue(NewJob::new("publish")).unwrap().job_id;
    jobq::WorkerPool::builder(&queue)
        .handler("publish", |ctx: &jobq::JobContext| {
            ctx.step("render", || Ok("proof.pdf".to_string()))?;
            ctx.step("upload", || {
                Ok(serde_json::json!({"url": "s3://b/proof.pdf"}))
            })?;
            let got = ctx.wait_for_event("approved", std::time::Duration::from_secs(86_400))?;
            Ok(serde_json::json!({ "got": got }))
        })
        .run_until_idle()
        .unwrap();
    assert_eq!(queue.get(&id).unwrap().status, jobq::Status::Waiting);
    let (_serve, addr) = serve(&db);
    let (_driver, port) = chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = session(port, profile.path(), 1280, 900).await;
        sign_in(&client, &format!("http://{addr}/#job={id}")).await;
        let rows = wait_count(&client, "[data-testid=steps] tbody tr", 3).await;
        let mut names = Vec::new();
        for row in &rows {
            names.push(row.attr("data-step").await.unwrap().unwrap_or_default());
        }
        assert_eq!(names, ["render", "upload", "@wait 1"]);
        let upload = rows[1].text().await.unwrap();
        let size = r#"{"url":"s3://b/proof.pdf"}"#.len();
        assert!(upload.contains(&format!("{size} B")), "{upload}");
        let wait = rows[2].text().await.unwrap();
        assert!(
            wait.contains("wait for approved") && wait.contains("not yet"),
            "{wait}"
        );
        let waiting = text_of(&client, "[data-testid=waiting-for]").await;
        assert!(waiting.contains("event approved"), "{waiting}");
        let card = text_of(&client, "[data-testid=count-waiting] .n").await;
        assert_eq!(card, "1");
        client.close().await.unwrap();
    });
}
