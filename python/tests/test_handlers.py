"""Handlers on the worker's threads, on both engines: every outcome, typed payloads, sync
and async side by side, flows read by ref, waiting for results, the test mode."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import pytest

import jobq
import jobq.testing


@dataclasses.dataclass
class Resize:
    image: str
    width: int = 100


@dataclasses.dataclass
class Thumb:
    path: str
    width: int


def test_a_handler_s_return_is_the_output_and_its_reports_are_stored(queue: jobq.Queue) -> None:
    seen = {}

    @queue.handler("resize", timeout="60s", max_attempts=5)
    def resize(job: jobq.Job) -> dict:
        seen.update(id=job.id, kind=job.kind, attempt=job.attempt, max_attempts=job.max_attempts,
                    queue=job.queue, cancelled=job.cancelled)
        job.progress(0.5, stage="resizing")
        job.stage("saving")
        job.cost(7)
        job.heartbeat()
        return {"thumb": job.input["image"] + ".png"}

    h = resize.enqueue({"image": "a"}, key="a")
    assert queue.get(h.id)["max_attempts"] == 5  # the handler's default
    summary = queue.worker(concurrency=2).run_until_idle()
    assert summary == jobq.Summary(processed=1, succeeded=1, attempts=1)
    assert h.result(timeout=5) == {"thumb": "a.png"}
    doc = h.job()
    assert doc["status"] == "succeeded" and doc["cost_cents"] == 7 and doc["progress"] == 1.0
    assert seen == {"id": h.id, "kind": "resize", "attempt": 1, "max_attempts": 5, "queue": "default",
                    "cancelled": False}
    assert callable(resize) and resize.__name__ == "resize" and resize.kind == "resize"


def test_typed_inputs_from_a_dataclass_and_a_pydantic_model(queue: jobq.Queue) -> None:
    pydantic = pytest.importorskip("pydantic")

    class Email(pydantic.BaseModel):
        to: str
        subject: str = "hi"

    got = []

    @queue.handler("resize")
    def resize(job: jobq.Job[Resize]) -> Thumb:
        assert isinstance(job.input, Resize)
        got.append(job.input)
        return Thumb(path=job.input.image + ".png", width=job.input.width)

    @queue.handler("email")
    def email(job: jobq.Job[Email]) -> Email:
        assert isinstance(job.input, Email)
        got.append(job.input)
        return Email(to=job.input.to.upper(), subject=job.input.subject)

    @queue.handler("bad-email", input=Email)
    def bad(job) -> None:
        job.input  # not an Email: pydantic refuses it, a failed attempt

    r = resize.enqueue(Resize("a", 50))
    e = email.enqueue(Email(to="x@example.com"))
    b = queue.enqueue("bad-email", {"subject": 3}, max_attempts=1)
    queue.worker().run_until_idle()
    assert r.result(timeout=5) == {"path": "a.png", "width": 50}
    assert e.result(timeout=5) == {"to": "X@EXAMPLE.COM", "subject": "hi"}
    assert Resize("a", 50) in got and Email(to="x@example.com") in got
    with pytest.raises(jobq.JobFailed) as failed:
        b.result(timeout=5)
    assert failed.value.code == "ValidationError" and "to" in failed.value.message


def test_every_outcome(queue: jobq.Queue) -> None:
    attempts: dict = {}

    @queue.handler("permanent")
    def permanent(job):
        raise jobq.Permanent("the file is corrupt", code="CORRUPT")

    @queue.handler("retry")
    def retry(job):
        attempts["retry"] = job.attempt
        if job.attempt == 1:
            raise jobq.Retry("rate limited", after="0s", code="RATE")
        return "second time"

    @queue.handler("retry-later")
    def retry_later(job):
        raise jobq.Retry("come back later", after="1h")

    @queue.handler("snooze")
    def snooze(job):
        raise jobq.Snooze("1h")

    @queue.handler("value-error")
    def value_error(job):
        def parse():
            raise ValueError("bad header in " + job.input["file"])
        parse()

    p = queue.enqueue("permanent", max_attempts=5)
    r = queue.enqueue("retry", max_attempts=3)
    later = queue.enqueue("retry-later", max_attempts=3)
    s = queue.enqueue("snooze")
    v = queue.enqueue("value-error", {"file": "a.csv"}, max_attempts=2)

    for _ in range(5):  # a retry ready at once runs in the next pass
        queue.worker().run_until_idle()
        if v.job()["status"] == "retry":  # status() says "scheduled": its time lies ahead
            # The value error's backoff is the default policy's (seconds): make it ready now.
            _make_ready(queue, v.id)
        elif r.status() == "succeeded":
            break

    with pytest.raises(jobq.JobFailed) as failed:
        p.result(timeout=5)
    assert failed.value.code == "CORRUPT" and failed.value.message == "the file is corrupt"
    assert p.job()["attempts"] == 1  # a permanent failure does not retry
    assert p.id in str(failed.value)

    assert r.result(timeout=5) == "second time" and attempts["retry"] == 2
    assert r.job()["errors"][0]["code"] == "RATE"

    doc = later.job()
    assert doc["status"] == "retry" and doc["last_error"] == "come back later"
    wait_s = _seconds_until(doc["run_after"])
    assert 3500 < wait_s <= 3600

    doc = s.job()
    assert doc["status"] == "queued" and doc["attempts"] == 0 and doc["snoozes"] == 1
    assert 3500 < _seconds_until(doc["run_after"]) <= 3600

    with pytest.raises(jobq.JobFailed) as failed:
        v.result(timeout=5)
    doc = v.job()
    assert doc["status"] == "failed" and doc["attempts"] == 2  # retried, then the dead letter
    assert failed.value.code == "ValueError" and failed.value.message == "bad header in a.csv"
    detail = doc["errors"][-1]["detail"]
    assert detail.startswith("Traceback (most recent call last):")
    assert "in parse" in detail and "ValueError: bad header in a.csv" in detail
    assert "jobq/__init__.py" not in detail  # the package's own frames are left out
    assert [j["id"] for j in queue.list(status="failed")["jobs"]].count(v.id) == 1


def _make_ready(queue: jobq.Queue, id: str) -> None:
    with queue.transaction() as tx:
        if queue.engine == "sqlite":
            tx.execute("UPDATE jobq_jobs SET run_after = 0 WHERE id = ?", [id])
        else:
            tx.execute("UPDATE jobq_jobs SET run_after = 0 WHERE id = $1", [id])


def _seconds_until(stamp: str) -> float:
    import datetime as dt

    return (dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")) - dt.datetime.now(dt.timezone.utc)).total_seconds()


def test_an_output_that_is_not_json_fails_the_job_saying_so(queue: jobq.Queue) -> None:
    @queue.handler("weird")
    def weird(job):
        return object()

    h = weird.enqueue()
    queue.worker().run_until_idle()
    with pytest.raises(jobq.JobFailed) as failed:
        h.result(timeout=5)
    assert failed.value.code == "OUTPUT" and "not JSON" in failed.value.message


def test_sync_and_async_handlers_side_by_side(queue: jobq.Queue) -> None:
    threads: dict = {}

    @queue.handler("sync")
    def sync(job):
        threads.setdefault("sync", set()).add(threading.current_thread().name)
        time.sleep(0.05)
        return job.input

    @queue.handler("async")
    async def run_async(job):
        threads.setdefault("async", set()).add(threading.current_thread().name)
        # The user's own to_thread calls do not starve the loop: it is not the default
        # executor that runs the handlers.
        slept = await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.05) for _ in range(8)))
        await asyncio.sleep(0.01)
        return {"n": job.input, "slept": len(slept)}

    @queue.handler("async-fails")
    async def fails(job):
        await asyncio.sleep(0)
        raise jobq.Permanent("async no", code="ANO")

    s = [queue.enqueue("sync", i) for i in range(6)]
    a = [queue.enqueue("async", i) for i in range(6)]
    f = queue.enqueue("async-fails")
    summary = queue.worker(concurrency=4).run_until_idle()
    assert summary.succeeded == 12 and summary.failed == 1
    assert [h.result(timeout=5) for h in s] == list(range(6))
    assert [h.result(timeout=5) for h in a] == [{"n": i, "slept": 8} for i in range(6)]
    assert threads["async"] == {"jobq-asyncio"}
    assert "jobq-asyncio" not in threads["sync"] and threading.main_thread().name not in threads["sync"]
    with pytest.raises(jobq.JobFailed, match="async no"):
        f.result(timeout=5)


def test_a_flow_s_join_reads_its_parts_by_ref(queue: jobq.Queue) -> None:
    @queue.handler("scene")
    def scene(job):
        return {"clip": f"scene-{job.input['n']}.mp4"}

    @queue.handler("audio")
    def audio(job):
        return {"track": job.input["name"] + ".wav"}

    @queue.handler("composite")
    def composite(job):
        parts = job.dependency_outputs()
        scenes = [parts[f"scene{i}"]["clip"] for i in range(1, 5)]
        return {"video": "+".join(scenes), "voice": parts["voice"]["track"], "music": parts["music"]["track"]}

    f = jobq.Flow("campaign", metadata={"customer": "acme"}, key="campaign-1")
    for i in range(1, 5):
        f.job(f"scene{i}", "scene", {"n": i})
    f.job("voice", "audio", {"name": "voice"})
    f.job("music", "audio", {"name": "music"})
    f.job("final", "composite", after=[*(f"scene{i}" for i in range(1, 5)), "voice", "music"])
    r = queue.submit_flow(f)
    assert set(r) == {"scene1", "scene2", "scene3", "scene4", "voice", "music", "final"}
    assert r["final"].status() == "blocked" and not r.already_existed
    again = queue.submit_flow(f)
    assert again.already_existed and again.group_id == r.group_id and again["final"] == r["final"]

    queue.worker(concurrency=4).run_until_idle()
    assert r["final"].result(timeout=5) == {
        "video": "scene-1.mp4+scene-2.mp4+scene-3.mp4+scene-4.mp4", "voice": "voice.wav", "music": "music.wav"}
    assert queue.get(r["final"].id)["ref"] == "final"
    assert {j["id"] for j in queue.list(group=r.group_id)["jobs"]} == {h.id for h in r.values()}


def test_a_flow_that_names_an_unknown_ref_creates_nothing(queue: jobq.Queue) -> None:
    f = jobq.Flow("broken").job("a", "x").job("b", "x", after=["nope"])
    with pytest.raises(jobq.InvalidInput, match="nope"):
        queue.submit_flow(f)
    assert queue.stats()["stats"]["total"] == 0


def test_result_and_aresult_on_success_failure_and_timeout(queue: jobq.Queue) -> None:
    @queue.handler("ok")
    def ok(job):
        time.sleep(0.2)
        return job.input * 2

    @queue.handler("no")
    def no(job):
        raise jobq.Permanent("nope", code="NO")

    worker = queue.worker(concurrency=2, poll_interval="50ms").start()
    try:
        good = ok.enqueue(21)
        bad = no.enqueue()
        assert good.result(timeout=10) == 42  # waited for: the job was still running
        with pytest.raises(jobq.JobFailed) as failed:
            bad.result(timeout=10)
        assert failed.value.code == "NO" and failed.value.job["id"] == bad.id

        async def main():
            g = ok.enqueue(5)
            b = no.enqueue()
            assert await g.aresult(timeout=10) == 10
            with pytest.raises(jobq.JobFailed):
                await b.aresult(timeout=10)

        asyncio.run(main())
    finally:
        worker.stop(grace="5s")

    never = queue.enqueue("nobody-handles-this")
    started = time.monotonic()
    with pytest.raises(jobq.Timeout, match=never.id):
        never.result(timeout=0.5)
    assert time.monotonic() - started < 5
    with pytest.raises(jobq.Timeout):
        asyncio.run(never.aresult(timeout="300ms"))
    cancelled = queue.enqueue("nobody-handles-this")
    queue.cancel(cancelled.id)
    with pytest.raises(jobq.JobFailed) as failed:
        cancelled.result(timeout=1)
    assert failed.value.code == "CANCELLED"


def test_a_worker_started_in_the_background_stops_and_reports(queue: jobq.Queue) -> None:
    started = threading.Event()
    saw = []

    @queue.handler("slow")
    def slow(job):
        started.set()
        for _ in range(200):
            if job.cancelled:
                saw.append("cancel")
                return "saw the cancel"
            time.sleep(0.05)
        return "done"

    w = queue.worker(concurrency=1, poll_interval="50ms", heartbeat_interval="100ms").start()
    assert w.worker_id
    h = slow.enqueue()
    assert started.wait(10)
    queue.cancel(h.id)
    summary = w.stop(grace="20s")
    assert h.status() == "cancelled" and saw == ["cancel"]
    # It ran once; its answer was refused, the job having been cancelled meanwhile.
    assert summary.processed == 1 and summary.attempts == 1 and summary.lost == 1
    with pytest.raises(jobq.Conflict):
        w.start()


def test_a_worker_without_handlers_is_refused(queue: jobq.Queue) -> None:
    with pytest.raises(jobq.InvalidInput, match="handler"):
        queue.worker()


def test_the_test_mode_runs_handlers_inline(queue: jobq.Queue) -> None:
    queue.enqueue("welcome_email", {"user": 7, "locale": "fr"})
    jobq.testing.assert_enqueued(queue, "welcome_email", {"user": 7})
    with pytest.raises(AssertionError, match="locale"):
        jobq.testing.assert_enqueued(queue, "welcome_email", {"user": 8})

    ran_on = []

    @queue.handler("welcome_email")
    def welcome(job):
        ran_on.append(threading.current_thread())
        return {"sent": job.input["user"]}

    @queue.handler("flaky")
    async def flaky(job):
        if job.attempt < 3:
            raise jobq.Retry("again", after="0s")
        return job.attempt

    queue.enqueue("flaky", max_attempts=5)
    outcomes = jobq.testing.drain(queue)
    assert ran_on == [threading.current_thread()]
    by_kind = {}
    for o in outcomes:
        by_kind.setdefault(o.kind, []).append(o)
    assert [o.status for o in by_kind["welcome_email"]] == ["succeeded"]
    assert by_kind["welcome_email"][0].output == {"sent": 7}
    assert [(o.attempt, o.status) for o in by_kind["flaky"]] == [(1, "retry"), (2, "retry"), (3, "succeeded")]
    assert by_kind["flaky"][0].error == "again"
    assert jobq.testing.drain(queue) == []
