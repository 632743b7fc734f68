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

#[test]
fn the_dashboard_signs_in_shows_jobs_and_cancels_one() {
    if !PathBuf::from(CHROMIUM).exists() || !PathBuf::from(CHROMEDRIVER).exists() {
        assert!(
            std::env::var_os("JOBQ_REQUIRE_BROWSER").is_none(),
            "JOBQ_REQUIRE_BROWSER is set but {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install -y chromium chromium-driver)"
        );
        eprintln!(
            "skipping the browser test: {CHROMIUM} and {CHROMEDRIVER} are not installed (apt-get install -y chromium chromium-driver)"
        );
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

    // `jobq serve`, as users run it.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_jobq"))
        .arg("--db")
        .arg(&db)
        .args(["serve", "--addr", "127.0.0.1:0", "--admin-key", KEY])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _serve = Killed(serve);
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();

    let port = free_port();
    let _driver = Killed(
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

    let profile = tempfile::tempdir().unwrap();
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cancelled_id = ids[0].clone();
    runtime.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1400,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session with headless Chromium");
        client.goto(&format!("http://{addr}/")).await.unwrap();

        // A wrong key is refused on the page.
        let key = client.wait().for_element(Locator::Css("[data-testid=login-key]")).await.unwrap();
        key.send_keys("not-the-key").await.unwrap();
        client.find(Locator::Css("[data-testid=login-submit]")).await.unwrap().click().await.unwrap();
        let error = client.wait().for_element(Locator::Css("#login-error")).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while error.text().await.unwrap().is_empty() {
            assert!(Instant::now() < deadline, "no message for a wrong key");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The right key shows the jobs, the counts and the health.
        let key = client.find(Locator::Css("[data-testid=login-key]")).await.unwrap();
        key.clear().await.unwrap();
        key.send_keys(KEY).await.unwrap();
        client.find(Locator::Css("[data-testid=login-submit]")).await.unwrap().click().await.unwrap();
        let row = format!("tr[data-job-id='{cancelled_id}']");
        client.wait().for_element(Locator::Css(&row)).await.unwrap();
        let rows = client.find_all(Locator::Css("tr[data-job-id]")).await.unwrap();
        assert_eq!(rows.len(), 4, "the four jobs are listed");
        let failed = client.find(Locator::Css("[data-testid=count-failed] .n")).await.unwrap().text().await.unwrap();
        assert_eq!(failed, "1");
        let health = client.find(Locator::Css("[data-testid=health]")).await.unwrap().text().await.unwrap();
        assert_eq!(health.to_lowercase(), "degraded");

        // Open the job and cancel it through the UI.
        client.find(Locator::Css(&row)).await.unwrap().click().await.unwrap();
        let detail = client.wait().for_element(Locator::Css("[data-testid=job-detail] [data-testid=cancel]")).await.unwrap();
        let drawer = client.find(Locator::Css("[data-testid=job-detail]")).await.unwrap().text().await.unwrap();
        assert!(drawer.contains(cancelled_id.as_str()) && drawer.contains("\"scene\": 1"), "{drawer}");
        detail.click().await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while queue.get(&cancelled_id).unwrap().status != Status::Cancelled {
            assert!(Instant::now() < deadline, "the cancel never reached the database");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The page shows it too, after its refresh.
        let pill = format!("{row} .pill.cancelled");
        client.wait().for_element(Locator::Css(&pill)).await.unwrap();

        let png = client.screenshot().await.unwrap();
        std::fs::write(&shot, &png).unwrap();

        // A server without auth (`serve --insecure-no-auth`) shows the jobs with no sign-in.
        let open = jobq::http::Server::start(queue.clone(), jobq::http::ServerConfig::new("127.0.0.1:0").insecure_no_auth()).unwrap();
        client.goto(&format!("http://{}/", open.addr())).await.unwrap();
        client.wait().for_element(Locator::Css(&pill)).await.unwrap();
        let login = client.find(Locator::Css("#login")).await.unwrap();
        assert!(!login.is_displayed().await.unwrap(), "no sign-in form on an open server");
        let logout = client.find(Locator::Css("#logout")).await.unwrap();
        assert!(!logout.is_displayed().await.unwrap(), "nothing to sign out of");
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
