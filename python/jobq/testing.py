"""Helpers for testing code that uses jobq: run handlers with no threads and no sleeps, and
check what your code enqueued. In the spirit of Celery's eager mode, Oban.Testing and
rivertest, but on the real queue (a SQLite file in the test's temporary folder), so what is
tested is what runs.

Example (pytest)::

    import jobq, jobq.testing

    def test_signup_sends_the_welcome_email(tmp_path):
        q = jobq.Queue(tmp_path / "jobs.db")
        app.signup(q, user=7)                            # the code under test enqueues
        jobq.testing.assert_enqueued(q, "welcome_email", {"user": 7})

        @q.handler("welcome_email")
        def welcome(job):
            return {"sent": job.input["user"]}

        [outcome] = jobq.testing.drain(q)
        assert outcome.status == "succeeded" and outcome.output == {"sent": 7}
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional, Sequence

from . import InvalidInput, Queue, _dumps, _jobq, _LoopThread

__all__ = ["Outcome", "drain", "enqueued", "assert_enqueued"]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one attempt of ``drain`` did: the job, the attempt, the status afterwards
    (``succeeded``, ``retry``, ``failed``, ``queued`` after a snooze…), the output, or the
    error's message and code."""

    id: str
    kind: str
    attempt: int
    status: str
    output: Any = None
    error: Optional[str] = None
    code: Optional[str] = None


def drain(queue: Queue, *, queues: Sequence[str] = (), kinds: Optional[Sequence[str]] = None) -> list[Outcome]:
    """Runs every ready job of the queue's handlers (``kinds``: only some) one by one on
    the calling thread, with no worker threads, and returns what happened to each attempt,
    in order. A job that fails and is ready again at once (a zero backoff) runs again, up to
    its attempts; one retried later is left. An exception of a handler is its job's failed
    attempt, as in a worker (it does not propagate)."""
    handlers = {k: h for k, h in queue.handlers.items() if kinds is None or k in kinds}
    if not handlers:
        raise InvalidInput("invalid handlers: register one with @queue.handler(kind) first")
    loop = _LoopThread() if any(h.is_async for h in handlers.values()) else None
    try:
        wrappers = [(k, h.wrapper(lambda: loop.loop), h.timeout) for k, h in handlers.items()]  # type: ignore[union-attr]
        done = _jobq.drain_inline(queue._native, wrappers, list(queues))
    finally:
        if loop is not None:
            loop.stop()
    return [Outcome(id, kind, attempt, status, None if output is None else json.loads(output), error, code)
            for id, kind, attempt, status, output, error, code in done]


def _contains(value: Any, part: Any) -> bool:
    if isinstance(part, dict):
        return isinstance(value, dict) and all(k in value and _contains(value[k], v) for k, v in part.items())
    return value == part


def enqueued(queue: Queue, kind: str, input: Any = None) -> list[dict]:
    """The jobs of ``kind`` (newest first, whatever their status) whose input contains
    ``input``: every field of it, recursively; other fields are ignored."""
    part = None if input is None else json.loads(_dumps(input))
    found: list = []
    after = None
    while True:
        page = queue.list(kind=kind, limit=1000, after=after)
        found.extend(j for j in page["jobs"] if part is None or _contains(j.get("input"), part))
        after = page.get("next")
        if after is None:
            return found


def assert_enqueued(queue: Queue, kind: str, input: Any = None) -> dict:
    """Asserts that a job of ``kind`` whose input contains ``input`` was enqueued; returns
    the newest. The message of a failure lists the inputs of the jobs of that kind that
    do exist."""
    matching = enqueued(queue, kind, input)
    if not matching:
        others = [j.get("input") for j in enqueued(queue, kind)][:10]
        raise AssertionError(f"no {kind!r} job with input containing {input!r}; "
                             f"the {kind!r} jobs have: {others!r}")
    return matching[0]
