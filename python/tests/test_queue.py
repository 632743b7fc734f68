"""The queue's calls, on both engines: enqueue and its options, reading and changing jobs,
owners, schedules, queue controls, errors; bad input changes nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import sysconfig

import pytest

import jobq


def test_enqueue_returns_a_handle_and_a_repeated_key_names_the_first_job(queue: jobq.Queue) -> None:
    h = queue.enqueue("resize", {"image": "a"}, key="a")
    assert h.already_existed is False
    assert h.status() == "queued"
    again = queue.enqueue("resize", {"image": "other"}, key="a")
    assert again.id == h.id and again.already_existed is True
    doc = h.job()
    assert doc["id"] == h.id and doc["kind"] == "resize" and doc["input"] == {"image": "a"}
    assert doc["idempotency_key"] == "a"
    assert queue.get(h.id) == doc


def test_every_enqueue_option_is_stored(queue: jobq.Queue) -> None:
    first = queue.enqueue("a")
    h = queue.enqueue("b", [1, 2], queue="mail", priority=5, max_attempts=7, concurrency_key="acct-1",
                      cost_cents=3, external_id="ext-9", after=[first], on_dependency_failure="run",
                      unique_while_active=True, key="k1", owner="acme")
    doc = queue.get(h.id)
    assert doc["queue"] == "mail" and doc["priority"] == 5 and doc["max_attempts"] == 7
    assert doc["input"] == [1, 2] and doc["cost_cents"] == 3 and doc["external_id"] == "ext-9"
    assert doc["owner"] == "acme" and doc["status"] == "blocked"
    assert [d["id"] for d in doc["dependencies"]] == [first.id]


def test_run_after_takes_a_delay_a_timedelta_and_an_aware_datetime(queue: jobq.Queue) -> None:
    later = queue.enqueue("x", run_after="1h")
    assert later.status() == "scheduled"
    td = queue.enqueue("x", run_after=dt.timedelta(minutes=5))
    assert td.status() == "scheduled"
    at = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    when = queue.enqueue("x", run_after=at)
    stored = dt.datetime.fromisoformat(queue.get(when.id)["run_after"].replace("Z", "+00:00"))
    assert abs((stored - at).total_seconds()) < 0.01
    with pytest.raises(jobq.InvalidInput, match="time zone"):
        queue.enqueue("x", run_after=dt.datetime.now())


def test_unique_for_turns_a_repeat_into_the_first_job(queue: jobq.Queue) -> None:
    a = queue.enqueue("report", {"day": 1}, key="r1", unique_for="1h")
    b = queue.enqueue("report", {"day": 1}, key="r1", unique_for="1h")
    assert b.already_existed and b.id == a.id


def test_inputs_of_dataclasses_and_pydantic_models_are_stored_as_json(queue: jobq.Queue) -> None:
    pydantic = pytest.importorskip("pydantic")

    @dataclasses.dataclass
    class Resize:
        image: str
        width: int = 100

    class Email(pydantic.BaseModel):
        to: str
        when: dt.date

    a = queue.enqueue("resize", Resize("a.png"))
    b = queue.enqueue("email", Email(to="x@example.com", when=dt.date(2026, 1, 2)))
    assert queue.get(a.id)["input"] == {"image": "a.png", "width": 100}
    assert queue.get(b.id)["input"] == {"to": "x@example.com", "when": "2026-01-02"}


def test_enqueue_many_is_all_or_nothing(queue: jobq.Queue) -> None:
    handles = queue.enqueue_many([("a", {"n": 1}), ("b", None, {"queue": "other", "priority": 3})])
    assert [queue.get(h.id)["kind"] for h in handles] == ["a", "b"]
    assert queue.get(handles[1].id)["queue"] == "other"
    before = queue.stats()["stats"]["total"]
    with pytest.raises(jobq.InvalidInput):
        queue.enqueue_many([("ok", {}), ("", {})])  # an empty kind is refused: none of them is kept
    with pytest.raises(jobq.InvalidInput, match=r"jobs\[1\]"):
        queue.enqueue_many([("ok", {}), "not a tuple"])
    assert queue.stats()["stats"]["total"] == before


def test_bad_options_are_refused_by_name_and_change_nothing(queue: jobq.Queue) -> None:
    with pytest.raises(jobq.InvalidInput, match="priority"):
        queue.enqueue("x", priority="high")  # type: ignore[arg-type]
    with pytest.raises(jobq.InvalidInput, match="run_after"):
        queue.enqueue("x", run_after="soon")
    with pytest.raises(jobq.InvalidInput, match="after"):
        queue.enqueue("x", after=["not-an-id"])
    with pytest.raises(jobq.InvalidInput, match="on_dependency_failure"):
        queue.enqueue("x", on_dependency_failure="ignore")
    with pytest.raises(jobq.InvalidInput, match="max_attempts"):
        queue.enqueue("x", max_attempts=0)
    with pytest.raises(jobq.InvalidInput, match="input"):
        queue.enqueue("x", float("nan"))
    with pytest.raises(jobq.InvalidInput, match="object is not JSON"):
        queue.enqueue("x", object())
    assert queue.stats()["stats"]["total"] == 0


def test_reading_and_changing_jobs(queue: jobq.Queue) -> None:
    a = queue.enqueue("a", external_id="order-17")
    b = queue.enqueue("b", queue="other")
    page = queue.list()
    assert [j["id"] for j in page["jobs"]] == [b.id, a.id] and page["next"] is None
    assert [j["id"] for j in queue.list(kind="a")["jobs"]] == [a.id]
    assert [j["id"] for j in queue.list(queue="other")["jobs"]] == [b.id]
    assert [j["id"] for j in queue.list(search="order-17")["jobs"]] == [a.id]
    first = queue.list(limit=1)
    assert len(first["jobs"]) == 1 and first["next"]
    assert [j["id"] for j in queue.list(limit=1, after=first["next"])["jobs"]] == [a.id]

    assert queue.cancel(a.id)["previous_status"] == "queued"
    assert a.status() == "cancelled"
    assert [j["id"] for j in queue.list(status="cancelled")["jobs"]] == [a.id]
    done = queue.retry(a.id)
    assert done["success"] and done["previous_status"] == "cancelled" and a.status() == "queued"
    queue.cancel(a.id)
    assert queue.delete(a.id)["job_id"] == a.id
    with pytest.raises(jobq.NotFound, match=a.id):
        queue.get(a.id)
    with pytest.raises(jobq.Conflict):
        queue.retry(b.id)  # a queued job is not retried
    stats = queue.stats()
    assert stats["stats"]["by_status"]["queued"] == 1 and stats["health"] in ("healthy", "degraded")
    with pytest.raises(jobq.NotFound, match="not-an-id"):
        queue.get("not-an-id")
    with pytest.raises(jobq.InvalidInput):
        queue.list(status="lost")


def test_a_scoped_queue_sees_and_changes_only_its_owner_s_jobs(db: str) -> None:
    q = jobq.Queue(db)
    acme = jobq.Queue(db, owner="acme")
    other = q.scoped("globex")
    mine = acme.enqueue("a")
    theirs = other.enqueue("a")
    assert acme.get(mine.id)["owner"] == "acme"
    assert [j["id"] for j in acme.list()["jobs"]] == [mine.id]
    with pytest.raises(jobq.NotFound):
        acme.get(theirs.id)
    with pytest.raises(jobq.NotFound):
        acme.cancel(theirs.id)
    assert other.get(theirs.id)["status"] == "queued"
    assert acme.owner == "acme" and q.owner is None
    assert {j["id"] for j in q.list()["jobs"]} == {mine.id, theirs.id}


def test_schedules(queue: jobq.Queue) -> None:
    s = queue.add_schedule("nightly", "report", cron="0 3 * * *", timezone="Europe/Paris", input={"full": True})
    assert s["name"] == "nightly"
    queue.add_schedule("tick", "ping", every="30s")
    assert sorted(x["name"] for x in queue.schedules()) == ["nightly", "tick"]
    with pytest.raises(jobq.Conflict):
        queue.add_schedule("tick", "ping", every="1m")
    queue.add_schedule("tick", "ping", every="1m", replace=True)
    assert queue.pause_schedule("tick")["paused"] is True
    assert queue.resume_schedule("tick")["paused"] is False
    h = queue.run_schedule("nightly")
    assert queue.get(h.id)["kind"] == "report" and queue.get(h.id)["input"] == {"full": True}
    queue.remove_schedule("tick")
    assert [x["name"] for x in queue.schedules()] == ["nightly"]
    with pytest.raises(jobq.InvalidInput, match="cron"):
        queue.add_schedule("bad", "x", cron="61 * * * *")
    with pytest.raises(jobq.InvalidInput):
        queue.add_schedule("both", "x", cron="* * * * *", every="1m")
    with pytest.raises(jobq.NotFound):
        queue.remove_schedule("nope")


def test_queue_controls(queue: jobq.Queue) -> None:
    queue.enqueue("x", queue="mail")
    assert queue.pause_queue("mail")["paused"] is True
    limits = queue.set_queue_limits("mail", max_running=2, max_running_per_key=1, rate="100/1m")
    assert limits["max_running"] == 2 and limits["max_running_per_key"] == 1
    row = next(q for q in queue.queues() if q["name"] == "mail")
    assert row["paused"] is True and row["max_running"] == 2
    queue.set_queue_limits("mail", max_running=None)
    row = next(q for q in queue.queues() if q["name"] == "mail")
    assert row["max_running"] is None and row["max_running_per_key"] == 1
    assert queue.resume_queue("mail")["paused"] is False
    with pytest.raises(jobq.InvalidInput, match="rate"):
        queue.set_queue_limits("mail", rate="fast")


def test_the_errors_are_one_family() -> None:
    for cls in (jobq.NotFound, jobq.InvalidInput, jobq.Conflict, jobq.BudgetExceeded, jobq.Timeout,
                jobq.JobFailed, jobq.DatabaseError, jobq.Forbidden):
        assert issubclass(cls, jobq.Error)


def test_a_file_that_is_not_a_jobq_database_is_refused(tmp_path) -> None:
    path = tmp_path / "other.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(jobq.DatabaseError):
        jobq.Queue(str(path))
    assert path.read_bytes() == b"this is not sqlite at all" * 100


def test_the_queue_describes_itself(db: str) -> None:
    q = jobq.Queue(db)
    assert q.engine == ("postgres" if db.startswith("postgres") else "sqlite")
    assert q.path == db
    assert "jobq.Queue" in repr(q)
    assert "Queue" in (jobq.Queue.__doc__ or "") and jobq.Queue.enqueue.__doc__


JOBQ = os.path.join(sysconfig.get_path("scripts"), "jobq")


def test_the_package_installs_the_jobq_command(db: str) -> None:
    q = jobq.Queue(db)
    h = q.enqueue("from-python", {"n": 1})
    shown = subprocess.run([JOBQ, "--db", db, "show", h.id, "--json"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["input"] == {"n": 1}
    # The same command line through python -m jobq.
    listed = subprocess.run([sys.executable, "-m", "jobq", "--db", db, "list", "--json"], capture_output=True,
                            text=True)
    assert listed.returncode == 0 and json.loads(listed.stdout)["jobs"][0]["id"] == h.id
    missing = subprocess.run([JOBQ, "--db", db, "show", "01a250e1-1d76-7000-94a5-13d3ce9fdd83"],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "not found" in missing.stderr.lower()


def test_series_counts_what_happened_step_by_step(queue: jobq.Queue) -> None:
    handles = queue.enqueue_many([("s", {"n": i}, {"queue": "series"}) for i in range(3)])
    queue.cancel(handles[0].id)
    series = queue.series("10m", queue="series")
    assert series["step_s"] == 60
    assert len(series["points"]) == 10
    assert sum(p["enqueued"] for p in series["points"]) == 3
    assert sum(p["cancelled"] for p in series["points"]) == 1
    assert series["points"][0]["run_ms"] == {"p50": None, "p95": None, "p99": None}
    assert sum(p["enqueued"] for p in queue.series("1h", "1h", kind="other")["points"]) == 0
    with pytest.raises(jobq.InvalidInput, match="step"):
        queue.series("1h", "30s")
    with pytest.raises(jobq.InvalidInput, match="window"):
        queue.series(-1)
