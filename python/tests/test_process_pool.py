"""``python -m jobq worker MODULE:ATTR``: the threads of this process, or warm child
processes speaking JSON lines (``--pool process``), recycled and replaced."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

import jobq

TASKS = '''
import dataclasses, os, sys
import jobq

queue = jobq.Queue(os.environ["JOBQ_TEST_DB"])

@dataclasses.dataclass
class Point:
    x: int
    y: int

@queue.handler("pid")
def pid(job):
    print("a stray print goes to the log, not into the protocol")
    job.progress(0.5, stage="halfway")
    return {"pid": os.getpid(), "n": job.input["n"]}

@queue.handler("crash")
def crash(job):
    if job.attempt == 1:
        os._exit(1)
    return {"pid": os.getpid(), "attempt": job.attempt}

@queue.handler("typed")
def typed(job: jobq.Job[Point]):
    assert isinstance(job.input, Point)
    return Point(job.input.y, job.input.x)

@queue.handler("async")
async def run_async(job):
    import asyncio
    await asyncio.sleep(0.01)
    return job.input

@queue.handler("fails")
def fails(job):
    raise jobq.Permanent("no good", code="NOGOOD")

@queue.handler("join")
def join(job):
    return sorted(job.dependency_outputs())

@queue.handler("durable", max_attempts=3)
def durable(job):
    log = job.input["log"]
    def effect(name):
        with open(log, "a") as f:
            f.write(name + "\\n")
        return name
    a = job.step("a", lambda: effect("a"))
    if job.attempt == 1:
        raise jobq.Retry("first run fails after a", after="0s")
    try:
        job.sleep("1s")
    except Exception:
        effect("caught")  # a park is not an Exception
        raise
    got = job.wait_for_event("go", timeout="1h")
    b = job.step("b", lambda: effect("b"))
    return {"a": a, "b": b, "got": got}

@queue.handler("twice")
def twice(job):
    job.step("x", lambda: 1)
    job.step("x", lambda: 2)

acme = queue.scoped("acme")
'''


@pytest.fixture
def tasks(tmp_path: Path) -> Path:
    (tmp_path / "tasks.py").write_text(textwrap.dedent(TASKS))
    return tmp_path


def _worker(tasks: Path, db: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "jobq", "worker", "tasks:queue", *args, "--once",
                           "--poll-interval", "100ms"], cwd=tasks, env={**__import__("os").environ,
                                                                       "JOBQ_TEST_DB": db},
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done


def test_the_process_pool_recycles_a_child_after_n_jobs(db: str, tasks: Path) -> None:
    q = jobq.Queue(db)
    handles = [q.enqueue("pid", {"n": i}) for i in range(6)]
    done = _worker(tasks, db, "--pool", "process", "--concurrency", "1", "--max-jobs-per-child", "2")
    outputs = [h.result(timeout=5) for h in handles]
    assert [o["n"] for o in outputs] == list(range(6))
    per_child = Counter(o["pid"] for o in outputs)
    assert sorted(per_child.values()) == [2, 2, 2], per_child  # three children, two jobs each
    assert "a stray print goes to the log" in done.stderr


def test_the_process_pool_survives_a_child_that_exits_mid_job(db: str, tasks: Path) -> None:
    q = jobq.Queue(db)
    crash = q.enqueue("crash", max_attempts=3)
    others = [q.enqueue("pid", {"n": i}) for i in range(4)]
    _worker(tasks, db, "--pool", "process", "--concurrency", "1")
    assert [h.result(timeout=5)["n"] for h in others] == list(range(4))  # the pool went on
    doc = crash.job()
    assert doc["status"] == "retry" and doc["error_code"] == "CHILD_EXITED" and doc["attempts"] == 1
    # Its retry, made ready now, runs in a fresh child.
    with q.transaction() as tx:
        tx.execute("UPDATE jobq_jobs SET run_after = 0 WHERE id = " + ("?" if q.engine == "sqlite" else "$1"),
                   [crash.id])
    _worker(tasks, db, "--pool", "process", "--concurrency", "1")
    out = crash.result(timeout=5)
    assert out["attempt"] == 2 and out["pid"] not in {h.result()["pid"] for h in others}


def test_the_process_pool_runs_every_kind_of_handler(db: str, tasks: Path) -> None:
    q = jobq.Queue(db)
    typed = q.enqueue("typed", {"x": 1, "y": 2})
    a = q.enqueue("async", [1, 2, 3])
    f = q.enqueue("fails")
    flow = jobq.Flow("parts").job("left", "pid", {"n": 1}).job("right", "pid", {"n": 2})
    flow.job("both", "join", after=["left", "right"])
    r = q.submit_flow(flow)
    _worker(tasks, db, "--pool", "process", "--concurrency", "2")
    assert typed.result(timeout=5) == {"x": 2, "y": 1}
    assert a.result(timeout=5) == [1, 2, 3]
    with pytest.raises(jobq.JobFailed) as failed:
        f.result(timeout=5)
    assert failed.value.code == "NOGOOD" and failed.value.message == "no good"
    assert r["both"].result(timeout=5) == ["left", "right"]


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_scoped_queue_s_worker_runs_only_its_owner_s_jobs(db: str, tasks: Path, pool: str) -> None:
    q = jobq.Queue(db)
    mine = q.scoped("acme").enqueue("pid", {"n": 1})
    theirs = q.scoped("globex").enqueue("pid", {"n": 2})
    nobody = q.enqueue("pid", {"n": 3})
    subprocess.run([sys.executable, "-m", "jobq", "worker", "tasks:acme", "--pool", pool, "--once"], cwd=tasks,
                   env={**__import__("os").environ, "JOBQ_TEST_DB": db}, check=True, capture_output=True,
                   timeout=120)
    assert mine.result(timeout=5)["n"] == 1
    assert theirs.status() == "queued" and nobody.status() == "queued"


def test_the_thread_pool_runs_the_module_s_handlers(db: str, tasks: Path) -> None:
    q = jobq.Queue(db)
    handles = [q.enqueue("pid", {"n": i}) for i in range(5)]
    done = _worker(tasks, db, "--concurrency", "3")
    pids = {h.result(timeout=5)["pid"] for h in handles}
    assert len(pids) == 1  # all in the worker's own process
    assert "Jobs succeeded: 5" in done.stdout


def test_a_bad_target_is_refused_clearly(tasks: Path, sqlite_db: str) -> None:
    env = {**__import__("os").environ, "JOBQ_TEST_DB": sqlite_db}
    for target, says in (("tasks", "MODULE:ATTR"), ("tasks:Point", "not a jobq.Queue"),
                         ("tasks:nothing", "nothing")):
        done = subprocess.run([sys.executable, "-m", "jobq", "worker", target, "--once"], cwd=tasks, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0 and says in done.stderr, (target, done.stderr)
    done = subprocess.run([sys.executable, "-m", "jobq", "worker", "tasks:queue", "--max-jobs-per-child", "2",
                           "--once"], cwd=tasks, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--pool process" in done.stderr
    assert json.loads(subprocess.run([sys.executable, "-m", "jobq", "--db", sqlite_db, "stats", "--json"],
                                     capture_output=True, text=True).stdout)["stats"]["total"] == 0


def test_the_process_pool_runs_durable_steps_sleeps_and_waits(db: str, tasks: Path) -> None:
    q = jobq.Queue(db)
    log = tasks / "effects.log"
    h = q.enqueue("durable", {"log": str(log)})
    bad = q.enqueue("twice")
    _worker(tasks, db, "--pool", "process", "--concurrency", "1")
    assert q.get(h.id)["status"] == "waiting" and "waiting_for" not in q.get(h.id)
    assert q.get(bad.id)["status"] == "failed" and q.get(bad.id)["error_code"] == "BAD_STEP"
    import time
    time.sleep(1.1)
    _worker(tasks, db, "--pool", "process", "--concurrency", "1")
    assert q.get(h.id)["waiting_for"] == "go"
    assert q.emit_event("go", {"ok": True})["woken"] == 1
    _worker(tasks, db, "--pool", "process", "--concurrency", "1")
    assert h.result(timeout=5) == {"a": "a", "b": "b", "got": {"ok": True}}
    assert log.read_text() == "a\nb\n"
    assert [s["name"] for s in q.steps(h.id)] == ["a", "@sleep 1", "@wait 1", "b"]
