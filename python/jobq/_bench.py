"""``python -m jobq bench``: the Python package beside the Rust library, in one run.

    python -m jobq bench [--jobs N] [--process-jobs N] [--oneshot-jobs N] [--rounds N] [--json]

The Rust and Python enqueue and threaded drain run in alternating rounds (``--rounds``,
3 by default) and their medians are kept. Each figure is a no-op job (no input, output ``null``) on a fresh SQLite file in a temporary
folder, with the library's default durability:

- ``rust_enqueue_one_per_s`` and ``rust_drain_4_per_s``: ``jobq bench`` itself (one enqueue
  call per job; a pool of 4 Rust handlers draining the queue), run by this package's own
  ``jobq`` command, so the same build is measured;
- ``python_enqueue_one_per_s``: ``queue.enqueue("noop")`` called once per job from Python;
- ``python_thread_drain_4_per_s``: a Python ``def`` handler drained by ``queue.worker(
  concurrency=4).run_until_idle()``;
- ``python_process_drain_4_per_s``: the same handler under ``python -m jobq worker
  MODULE:ATTR --pool process --concurrency 4``: four warm children;
- ``python_oneshot_drain_4_per_s``: the same handler under ``jobq worker --exec``, one new
  interpreter per job (4 at a time).

The ratios are the package's targets: threaded drain ≥ 0.3× the Rust drain, Python enqueue
≥ 0.7× the Rust enqueue, process pool ≥ 20× the one-shot ``--exec`` drain.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

import jobq

# The queue whose handler every Python drain runs; its file is set before it is imported
# (by ``JOBQ_BENCH_DB``) so that the children of the process pool open the same one.
queue = jobq.Queue(os.environ.get("JOBQ_BENCH_DB", os.path.join(tempfile.gettempdir(), "jobq-bench.db")))


@queue.handler("noop")
def noop(job: jobq.Job) -> None:
    """Does nothing: what is measured is the queue."""
    return None


def _fill(q: jobq.Queue, n: int) -> None:
    for start in range(0, n, 1000):
        q.enqueue_many([("noop", None)] * min(1000, n - start))


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def _python(args: list, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=False)


def _rust(folder: str, jobs: int) -> dict:
    """``jobq bench``'s one-by-one enqueue and 4-handler drain, same jobs, this build."""
    done = _python(["-m", "jobq", "--db", os.path.join(folder, "rust.db"), "bench", "--jobs", str(jobs),
                    "--workers", "4", "--only", "enqueue", "--only", "drain", "--json"])
    if done.returncode != 0:
        raise SystemExit(f"jobq bench failed: {done.stderr.strip()}")
    report = json.loads(done.stdout)
    drain = next(d["jobs_per_s"] for d in report["drain"] if d["workers"] == 4)
    return {"enqueue_one_per_s": report["enqueue_one_per_s"], "drain_4_per_s": drain}


def _python_enqueue(folder: str, n: int) -> float:
    q = jobq.Queue(os.path.join(folder, "py-enqueue.db"))
    started = time.perf_counter()
    for _ in range(n):
        q.enqueue("noop")
    return _rate(n, time.perf_counter() - started)


def _thread_drain(folder: str, n: int) -> float:
    q = jobq.Queue(os.path.join(folder, "py-thread.db"))
    _fill(q, n)
    q.handlers = queue.handlers
    started = time.perf_counter()
    summary = q.worker(concurrency=4).run_until_idle()
    took = time.perf_counter() - started
    if summary.succeeded != n:
        raise SystemExit(f"the threaded drain ran {summary.succeeded} of {n} jobs")
    return _rate(n, took)


def _drain_in_child(db: str, n: int, command: list) -> float:
    q = jobq.Queue(db)
    _fill(q, n)
    env = dict(os.environ, JOBQ_BENCH_DB=db)
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed: {done.stderr.strip()[-500:]}")
    left = q.stats()["stats"]["by_status"]
    if left["succeeded"] != n:
        raise SystemExit(f"{shlex.join(command)} left {left} of {n} jobs")
    return _rate(n, took)


def _process_drain(folder: str, n: int) -> float:
    db = os.path.join(folder, "py-process.db")
    return _drain_in_child(db, n, [sys.executable, "-m", "jobq", "worker", "jobq._bench:queue", "--pool",
                                   "process", "--concurrency", "4", "--once"])


def _oneshot_drain(folder: str, n: int) -> float:
    db = os.path.join(folder, "py-oneshot.db")
    handler = shlex.join([sys.executable, "-m", "jobq._bench", "oneshot"])
    return _drain_in_child(db, n, [sys.executable, "-m", "jobq", "--db", db, "worker", "--exec", handler,
                                   "--concurrency", "4", "--once"])


def _oneshot() -> None:
    """One job under ``--exec``'s one-shot protocol: input on stdin, output on stdout."""
    from ._child import ChildJob

    text = sys.stdin.read()
    line = {"id": os.environ["JOBQ_JOB_ID"], "kind": os.environ["JOBQ_JOB_KIND"],
            "attempt": int(os.environ["JOBQ_ATTEMPT"]), "input": json.loads(text) if text.strip() else None}
    print(json.dumps(noop.fn(ChildJob(line, lambda report: None, None))))


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobq bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs of the enqueue, Rust and threaded drains")
    parser.add_argument("--process-jobs", type=int, default=5_000, help="jobs of the process pool's drain")
    parser.add_argument("--oneshot-jobs", type=int, default=100, help="jobs of the one-shot --exec drain")
    parser.add_argument("--rounds", type=int, default=3, help="alternating Rust and Python rounds (medians kept)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if min(args.jobs, args.process_jobs, args.oneshot_jobs, args.rounds) < 1:
        raise SystemExit("jobq bench: the job counts must be at least 1")
    say = (lambda what: None) if args.json else (lambda what: print(f"… {what}", file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="jobq-bench-") as folder:
        # The Rust and Python figures are taken in alternating rounds and the median of
        # each kept, so that a passing slowdown of a shared machine weighs on both.
        rounds: dict[str, list] = {"rust_enqueue": [], "rust_drain": [], "py_enqueue": [], "thread": []}
        for r in range(args.rounds):
            sub = os.path.join(folder, f"round-{r}")
            os.mkdir(sub)
            say(f"round {r + 1}/{args.rounds}: Rust (jobq bench: enqueue one by one, drain with 4 handlers), "
                f"{args.jobs} jobs")
            rust = _rust(sub, args.jobs)
            rounds["rust_enqueue"].append(rust["enqueue_one_per_s"])
            rounds["rust_drain"].append(rust["drain_4_per_s"])
            say(f"round {r + 1}/{args.rounds}: Python enqueue one by one, {args.jobs} jobs")
            rounds["py_enqueue"].append(_python_enqueue(sub, args.jobs))
            say(f"round {r + 1}/{args.rounds}: Python no-op handler on 4 worker threads, {args.jobs} jobs")
            rounds["thread"].append(_thread_drain(sub, args.jobs))
        rust = {"enqueue_one_per_s": statistics.median(rounds["rust_enqueue"]),
                "drain_4_per_s": statistics.median(rounds["rust_drain"])}
        py_enqueue = statistics.median(rounds["py_enqueue"])
        thread = statistics.median(rounds["thread"])
        say(f"Python: the same handler in 4 warm processes (--pool process), {args.process_jobs} jobs")
        process = _process_drain(folder, args.process_jobs)
        say(f"Python: the same handler under worker --exec, one interpreter per job, {args.oneshot_jobs} jobs")
        oneshot = _oneshot_drain(folder, args.oneshot_jobs)
    report: dict[str, Any] = {
        "jobs": args.jobs,
        "rounds": args.rounds,
        "rust_enqueue_one_per_s": rust["enqueue_one_per_s"],
        "python_enqueue_one_per_s": py_enqueue,
        "rust_drain_4_per_s": rust["drain_4_per_s"],
        "python_thread_drain_4_per_s": thread,
        "python_process_drain_4_per_s": process,
        "python_oneshot_drain_4_per_s": oneshot,
        "ratios": {
            "python_enqueue_vs_rust": py_enqueue / rust["enqueue_one_per_s"],
            "thread_drain_vs_rust": thread / rust["drain_4_per_s"],
            "process_pool_vs_oneshot": process / oneshot,
        },
        "targets": {"python_enqueue_vs_rust": 0.7, "thread_drain_vs_rust": 0.3, "process_pool_vs_oneshot": 20.0},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    rows = [
        ("enqueue, one call per job", rust["enqueue_one_per_s"], py_enqueue, "python_enqueue_vs_rust"),
        ("drain, 4 threads, no-op handler", rust["drain_4_per_s"], thread, "thread_drain_vs_rust"),
    ]
    print(f"{'':34}{'Rust':>12}{'Python':>12}{'ratio':>8}{'target':>9}")
    for name, r, p, key in rows:
        ratio = report["ratios"][key]
        print(f"{name:34}{r:>10.0f}/s{p:>10.0f}/s{ratio:>7.2f}×{'≥ ' + format(report['targets'][key], 'g') + '×':>9}")
    print(f"\n{'Python handler, 4 at a time':34}{'jobs/s':>12}")
    print(f"{'--pool process (warm children)':34}{process:>10.0f}/s")
    print(f"{'--exec oneshot (one per job)':34}{oneshot:>10.1f}/s")
    print(f"{'process pool / oneshot':34}{report['ratios']['process_pool_vs_oneshot']:>11.1f}×  (target ≥ 20×)")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["oneshot"]:
        _oneshot()
    else:
        sys.exit(main())
