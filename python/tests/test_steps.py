"""Durable steps, sleep and events from Python, on both engines: finished steps replayed
after a failure, a sleep and a wait that park the job (``waiting``, no slot, no attempt),
an event that wakes it, async handlers too."""

from __future__ import annotations

import time

import pytest

import jobq


def test_a_job_that_runs_again_replays_its_steps_and_runs_the_rest_once(queue: jobq.Queue) -> None:
    effects: list[str] = []
    failures = [1]

    @queue.handler("campaign", max_attempts=3)
    def campaign(job: jobq.Job) -> dict:
        frames = job.step("render", lambda: effects.append("render") or 240)
        url = job.step("upload", lambda: effects.append("upload") or f"s3://b/{frames}.mp4")
        if failures:
            failures.pop()
            raise jobq.Retry("billing is down", after="0s")
        invoice = job.step("bill", lambda: effects.append("bill") or {"n": 7})
        return {"url": url, "invoice": invoice}

    h = campaign.enqueue({})
    queue.worker().run_until_idle()
    queue.worker().run_until_idle()
    assert h.result(timeout=5) == {"url": "s3://b/240.mp4", "invoice": {"n": 7}}
    assert effects == ["render", "upload", "bill"]
    steps = queue.steps(h.id)
    assert [s["name"] for s in steps] == ["render", "upload", "bill"]
    assert [s["kind"] for s in steps] == ["step"] * 3
    assert queue.get(h.id)["attempts"] == 2


def test_a_step_name_used_twice_fails_the_job_for_good_naming_it(queue: jobq.Queue) -> None:
    @queue.handler("twice")
    def twice(job: jobq.Job) -> None:
        job.step("fetch", lambda: 1)
        job.step("fetch", lambda: 2)

    h = twice.enqueue({})
    queue.worker().run_until_idle()
    doc = queue.get(h.id)
    assert doc["status"] == "failed" and doc["error_code"] == "BAD_STEP"
    assert '"fetch"' in doc["last_error"] and "twice" in doc["last_error"]


def test_a_sleep_parks_the_job_and_it_resumes_when_the_time_comes(queue: jobq.Queue) -> None:
    effects: list[str] = []

    @queue.handler("drip")
    def drip(job: jobq.Job) -> str:
        job.step("welcome", lambda: effects.append("welcome"))
        try:
            job.sleep("1s")
        except Exception:  # a park is not an Exception: it passes through
            effects.append("caught")
            raise
        job.step("follow-up", lambda: effects.append("follow-up"))
        return "done"

    h = drip.enqueue({})
    summary = queue.worker(concurrency=1).run_until_idle()
    assert (summary.succeeded, summary.parked) == (0, 1)
    doc = queue.get(h.id)
    assert (doc["status"], doc["attempts"]) == ("waiting", 0)
    assert queue.stats()["stats"]["by_status"]["waiting"] == 1
    time.sleep(1.1)
    queue.worker().run_until_idle()
    assert h.result(timeout=5) == "done"
    assert effects == ["welcome", "follow-up"]
    assert [s["kind"] for s in queue.steps(h.id)] == ["step", "sleep", "step"]


def test_an_event_wakes_the_waiting_job_and_an_early_one_is_not_lost(queue: jobq.Queue) -> None:
    @queue.handler("publish")
    def publish(job: jobq.Job) -> dict:
        return {"got": job.wait_for_event("approved", timeout="1d")}

    late = publish.enqueue({})
    queue.worker().run_until_idle()
    doc = queue.get(late.id)
    assert doc["status"] == "waiting" and doc["waiting_for"] == "approved"
    assert queue.emit_event("approved", {"by": "ann"})["woken"] == 1
    queue.worker().run_until_idle()
    assert late.result(timeout=5) == {"got": {"by": "ann"}}

    early = publish.enqueue({})
    time.sleep(0.01)
    assert queue.emit_event("approved", "before the wait")["woken"] == 0
    queue.worker().run_until_idle()
    assert early.result(timeout=5) == {"got": "before the wait"}


def test_a_wait_times_out_with_none_and_a_waiting_job_can_be_cancelled(queue: jobq.Queue) -> None:
    @queue.handler("publish")
    def publish(job: jobq.Job) -> dict:
        return {"got": job.wait_for_event("approved", timeout="1s")}

    timed = publish.enqueue({})
    cancelled = publish.enqueue({})
    queue.worker().run_until_idle()
    queue.cancel(cancelled.id)
    time.sleep(1.1)
    queue.worker().run_until_idle()
    assert timed.result(timeout=5) == {"got": None}
    assert queue.get(cancelled.id)["status"] == "cancelled"


def test_async_handlers_step_sleep_and_wait_too(queue: jobq.Queue) -> None:
    effects: list[str] = []

    async def upload() -> str:
        effects.append("upload")
        return "s3://x"

    async def measure(url: str) -> int:
        effects.append("measure")
        return len(url)

    @queue.handler("async-flow")
    async def flow(job: jobq.Job) -> dict:
        url = await job.step("upload", upload)
        size = await job.astep("size", lambda: measure(url))
        n = job.step("count", lambda: effects.append("count") or 3)
        got = job.wait_for_event("go", timeout="1h")
        return {"url": url, "size": size, "n": n, "got": got}

    h = flow.enqueue({})
    queue.worker().run_until_idle()
    assert queue.get(h.id)["status"] == "waiting"
    queue.emit_event("go", [1, 2])
    queue.worker().run_until_idle()
    assert h.result(timeout=5) == {"url": "s3://x", "size": 6, "n": 3, "got": [1, 2]}
    assert effects == ["upload", "measure", "count"]


def test_retry_from_scratch_forgets_the_steps(queue: jobq.Queue) -> None:
    effects: list[str] = []

    @queue.handler("once", max_attempts=1)
    def once(job: jobq.Job) -> None:
        job.step("expensive", lambda: effects.append("expensive"))
        raise jobq.Permanent("no")

    h = once.enqueue({})
    queue.worker().run_until_idle()
    queue.retry(h.id)
    queue.worker().run_until_idle()
    assert effects == ["expensive"]
    queue.retry_from_scratch(h.id)
    assert queue.steps(h.id) == []
    queue.worker().run_until_idle()
    assert effects == ["expensive", "expensive"]
    with pytest.raises(jobq.InvalidInput):
        queue.emit_event("", {})
