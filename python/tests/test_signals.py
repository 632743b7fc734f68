"""Real signals to real child processes: Ctrl-C interrupts every wait, SIGTERM stops a
worker as ``jobq worker`` does, SIGKILL mid-job gives the job to the next worker, and a
handler holding the GIL keeps its lease."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

import jobq

from conftest import wait_until

# The child's preamble: the queue on the test's database, a "sleep" handler that says when
# it starts, and a line on stdout once the child reaches the call under test.
PREAMBLE = """
import json, os, sys, time
import jobq
q = jobq.Queue(os.environ["JOBQ_TEST_DB"])

@q.handler("sleep")
def sleep(job):
    print("started", job.id, job.attempt, flush=True)
    time.sleep(job.input["seconds"])
    return {"slept": job.input["seconds"], "pid": os.getpid()}
"""


def _interrupted_within(child, db: str, code: str, limit: float = 2.0) -> tuple:
    c = child(PREAMBLE + code, env={"JOBQ_TEST_DB": db})
    c.wait_for_line("ready")
    time.sleep(0.5)  # inside the blocking call
    sent = time.monotonic()
    c.signal(signal.SIGINT)
    rc, out, err = c.wait(timeout=30)
    took = time.monotonic() - sent
    assert took < limit, f"the child took {took:.2f} s to stop after SIGINT: {err}"
    return rc, out, err


def test_ctrl_c_interrupts_result(db: str, child) -> None:
    rc, out, err = _interrupted_within(child, db, """
h = q.enqueue("nobody-runs-this")
print("ready", flush=True)
try:
    h.result()
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
""")
    assert rc == 3 and "interrupted" in out, err


def test_ctrl_c_interrupts_aresult(db: str, child) -> None:
    rc, out, err = _interrupted_within(child, db, """
import asyncio
h = q.enqueue("nobody-runs-this")
print("ready", flush=True)
try:
    asyncio.run(h.aresult())
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
""")
    assert rc == 3 and "interrupted" in out, err


def test_ctrl_c_interrupts_an_idle_run(db: str, child) -> None:
    rc, out, err = _interrupted_within(child, db, """
w = q.worker(concurrency=2)
print("ready", flush=True)
try:
    w.run()
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
""")
    assert rc == 3 and "interrupted" in out, err


def test_ctrl_c_interrupts_run_until_idle_and_releases_the_running_job(db: str, child) -> None:
    q = jobq.Queue(db)
    h = q.enqueue("sleep", {"seconds": 60})
    c = child(PREAMBLE + """
print("ready", flush=True)
try:
    q.worker(concurrency=1).run_until_idle()
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
""", env={"JOBQ_TEST_DB": db})
    c.wait_for_line("ready")
    c.wait_for_line("started")
    sent = time.monotonic()
    c.signal(signal.SIGINT)
    rc, out, err = c.wait(timeout=30)
    assert time.monotonic() - sent < 2.0, err
    assert rc == 3 and "interrupted" in out, err
    doc = q.get(h.id)
    assert doc["status"] == "queued" and doc["attempts"] == 0  # given back for the next worker, unspent


def test_sigterm_lets_the_running_job_finish_within_the_grace_period(db: str, child) -> None:
    q = jobq.Queue(db)
    h = q.enqueue("sleep", {"seconds": 1})
    c = child(PREAMBLE + """
print("ready", flush=True)
s = q.worker(concurrency=1, grace="20s").run()
print("summary", json.dumps(s.__dict__), flush=True)
""", env={"JOBQ_TEST_DB": db})
    c.wait_for_line("started")
    c.signal(signal.SIGTERM)
    rc, out, err = c.wait(timeout=30)
    assert rc == 0, err
    summary = json.loads(next(line for line in out.splitlines() if line.startswith("summary")).split(" ", 1)[1])
    assert summary["succeeded"] == 1 and summary["released"] == 0
    assert h.result(timeout=1)["slept"] == 1


def test_sigterm_releases_what_outlives_the_grace_period(db: str, child) -> None:
    q = jobq.Queue(db)
    h = q.enqueue("sleep", {"seconds": 60})
    c = child(PREAMBLE + """
print("ready", flush=True)
s = q.worker(concurrency=1, grace="500ms").run()
print("summary", json.dumps(s.__dict__), flush=True)
""", env={"JOBQ_TEST_DB": db})
    c.wait_for_line("started")
    sent = time.monotonic()
    c.signal(signal.SIGTERM)
    rc, out, err = c.wait(timeout=30)
    assert time.monotonic() - sent < 5, err
    assert rc == 0, err
    summary = json.loads(next(line for line in out.splitlines() if line.startswith("summary")).split(" ", 1)[1])
    assert summary["released"] == 1 and summary["succeeded"] == 0
    doc = q.get(h.id)
    assert doc["status"] == "queued" and doc["attempts"] == 0


def test_a_worker_killed_mid_job_gives_the_job_to_the_next_and_it_succeeds_once(db: str, child, tmp_path) -> None:
    q = jobq.Queue(db)
    h = q.enqueue("sleep", {"seconds": 600})
    doomed = child(PREAMBLE + """
print("ready", flush=True)
q.worker(concurrency=1, heartbeat_interval="100ms").run()
""", env={"JOBQ_TEST_DB": db})
    line = doomed.wait_for_line("started")
    assert line.split()[1:] == [h.id, "1"]
    assert q.get(h.id)["status"] == "running"
    os.killpg(doomed.proc.pid, signal.SIGKILL)
    doomed.proc.wait()

    runs = []

    @q.handler("sleep")
    def sleep_again(job):
        runs.append(job.attempt)
        return {"done": True}

    w = q.worker(concurrency=1, poll_interval="100ms", heartbeat_interval="200ms", heartbeat_timeout="1s",
                 maintenance_interval="200ms")
    w.start()
    try:
        assert h.result(timeout=30) == {"done": True}
    finally:
        summary = w.stop(grace="5s")
    assert runs == [2] and summary.succeeded == 1
    doc = q.get(h.id)
    assert doc["status"] == "succeeded" and doc["attempts"] == 2 and doc["output"] == {"done": True}
    assert len(q.list(status="succeeded")["jobs"]) == 1


def test_a_handler_holding_the_gil_for_three_heartbeats_keeps_its_lease(db: str, child) -> None:
    q = jobq.Queue(db)
    h = q.enqueue("hold", {"seconds": 2.0})
    c = child("""
import os, sys, threading, time, json
import jobq
q = jobq.Queue(os.environ["JOBQ_TEST_DB"])
ticks = []

def ticker():
    while True:
        ticks.append(time.monotonic())
        time.sleep(0.01)

@q.handler("hold")
def hold(job):
    threading.Thread(target=ticker, daemon=True).start()
    time.sleep(0.1)
    print("holding", flush=True)
    # A CPU-bound handler that never lets go of the GIL: no other Python thread runs until
    # it returns (the switch interval is longer than the work).
    sys.setswitchinterval(1000)
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < job.input["seconds"]:
        n += 1
    ended = time.monotonic()
    sys.setswitchinterval(0.005)
    inside = [t for t in ticks if started + 0.05 < t < ended - 0.05]
    return {"ticks_while_holding": len(inside), "held_s": ended - started}

print("ready", flush=True)
q.worker(concurrency=1, heartbeat_interval="200ms").run_until_idle()
""", env={"JOBQ_TEST_DB": db})
    c.wait_for_line("holding")
    beats = set()
    released = 0
    deadline = time.monotonic() + 1.8
    while time.monotonic() < deadline:
        beats.add(q.get(h.id)["heartbeat_at"])
        # Any maintenance would release a job whose heartbeat is three intervals old.
        released += q.release_stale(heartbeat_timeout="600ms")
        time.sleep(0.05)
    rc, out, err = c.wait(timeout=30)
    assert rc == 0, err
    output = h.result(timeout=5)
    assert output["ticks_while_holding"] == 0, "the handler did not hold the GIL: the test proves nothing"
    assert output["held_s"] >= 2.0
    assert released == 0
    assert len(beats) >= 4, f"the heartbeat stood still while the GIL was held: {sorted(beats)}"
    doc = q.get(h.id)
    assert doc["status"] == "succeeded" and doc["attempts"] == 1


def test_a_program_that_exits_with_its_worker_running_gives_the_job_back(db: str, child) -> None:
    q = jobq.Queue(db)
    h = q.enqueue("sleep", {"seconds": 60})
    c = child(PREAMBLE + """
w = q.worker(concurrency=1).start()
while q.get(os.environ["JOB"])["status"] != "running":
    time.sleep(0.02)
time.sleep(0.3)
print("exiting", flush=True)
""", env={"JOBQ_TEST_DB": db, "JOB": h.id})
    c.wait_for_line("exiting")
    rc, out, err = c.wait(timeout=10)
    assert rc == 0, err
    doc = q.get(h.id)
    assert doc["status"] == "queued" and doc["attempts"] == 0
