"""``python -m jobq``: the worker for a program's handlers, and the benchmark.

    python -m jobq worker MODULE:ATTR [--concurrency N] [--pool thread|process]
                                      [--max-jobs-per-child N] [--queue Q]... [--once]
    python -m jobq bench [--jobs N]
    python -m jobq COMMAND ...            # anything else: the jobq command line

``MODULE:ATTR`` names the ``jobq.Queue`` whose handlers run (``app.tasks:queue``). With
``--pool thread`` (the default) they run on the worker's threads in this process; with
``--pool process``, in warm child processes (``--concurrency`` of them), each importing the
module once and taking jobs as JSON lines: real parallelism past the GIL, and a fresh
process every ``--max-jobs-per-child`` jobs for handlers that leak memory.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from typing import Any, Optional

from . import Queue, _jobq


def load_queue(target: str) -> Queue:
    """The ``Queue`` that ``MODULE:ATTR`` names."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"jobq: {target!r} is not MODULE:ATTR (the module and the name of its jobq.Queue)")
    if "" not in sys.path:
        sys.path.insert(0, "")
    module = importlib.import_module(module_name)
    queue: Any = module
    for part in attr.split("."):
        queue = getattr(queue, part)
    if not isinstance(queue, Queue):
        raise SystemExit(f"jobq: {target} is a {type(queue).__name__}, not a jobq.Queue")
    return queue


def worker(argv: list) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobq worker",
        description="Runs the handlers of a jobq.Queue (with --exec CMD instead: the jobq command line's "
                    "worker for a command in any language).")
    parser.add_argument("target", metavar="MODULE:ATTR", help="the queue whose handlers run, e.g. app.tasks:queue")
    parser.add_argument("--concurrency", type=int, default=4, help="jobs at once (threads, or processes)")
    parser.add_argument("--pool", choices=["thread", "process"], default="thread",
                        help="run handlers on threads here, or in warm child processes")
    parser.add_argument("--max-jobs-per-child", type=int, default=None, metavar="N",
                        help="with --pool process: a fresh child after N jobs")
    parser.add_argument("--queue", action="append", default=[], metavar="Q", help="queues to serve (repeatable)")
    parser.add_argument("--once", action="store_true", help="run what is ready, then exit")
    parser.add_argument("--grace", default="30s", help="on SIGINT/SIGTERM, how long running jobs may finish")
    parser.add_argument("--poll-interval", default="1s", help="how often to look for work from other processes")
    args = parser.parse_args(argv)
    queue = load_queue(args.target)
    if not queue.handlers:
        raise SystemExit(f"jobq: {args.target} has no handler (register them with @queue.handler(kind))")
    if args.pool == "process":
        command = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "jobq._child", args.target))
        cli = ["jobq", "--db", queue.path, "worker", "--exec", command, "--protocol", "jsonl",
               "--concurrency", str(args.concurrency), "--grace", args.grace,
               "--poll-interval", args.poll_interval]
        for kind in queue.handlers:
            cli += ["--kind", kind]
        for q in args.queue:
            cli += ["--queue", q]
        if queue.owner is not None:
            cli += ["--owner", queue.owner]
        if args.max_jobs_per_child is not None:
            cli += ["--max-jobs-per-child", str(args.max_jobs_per_child)]
        timeouts = {h.timeout for h in queue.handlers.values() if h.timeout is not None}
        if timeouts:
            cli += ["--job-timeout", f"{int(max(timeouts) * 1000)}ms"]
        if args.once:
            cli.append("--once")
        return _jobq.cli_main(cli)
    if args.max_jobs_per_child is not None:
        raise SystemExit("jobq: --max-jobs-per-child needs --pool process")
    w = queue.worker(concurrency=args.concurrency, queues=args.queue, grace=args.grace,
                     poll_interval=args.poll_interval)
    print(f"jobq worker: {', '.join(queue.handlers)} on {queue.location}, {args.concurrency} threads", flush=True)
    summary = w.run_until_idle() if args.once else w.run()
    print(f"Jobs processed: {summary.processed}\nJobs succeeded: {summary.succeeded}\nJobs failed: {summary.failed}",
          flush=True)
    return 0


def main(argv: Optional[list] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"] and not any(a == "--exec" or a.startswith("--exec=") for a in argv):
        return worker(argv[1:])
    if argv[:1] == ["bench"]:
        from ._bench import main as bench
        return bench(argv[1:])
    return _jobq.cli_main(["jobq", *argv])


if __name__ == "__main__":
    sys.exit(main())
