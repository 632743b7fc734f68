"""A warm handler process of ``python -m jobq worker MODULE:ATTR --pool process``: it loads
the queue's handlers once, then takes jobs as JSON lines on stdin and answers each on
stdout, as ``jobq worker --exec CMD --protocol jsonl`` asks. What a handler prints goes to
stderr (the worker's), never into the protocol."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import sys
from typing import Any, Optional

from . import _dumps, _outcome, _seconds, _to_type
from ._errors import Parked
from .__main__ import load_queue


class ChildJob:
    """A job in a warm process: as ``jobq.Job``, its reports written as protocol lines."""

    def __init__(self, line: dict, say: Any, input_type: Any):
        self._line = line
        self._say = say
        self._type = input_type
        self._decoded = False
        self._input: Any = None

    id = property(lambda self: self._line["id"])
    kind = property(lambda self: self._line["kind"])
    attempt = property(lambda self: self._line["attempt"])
    cancelled = property(lambda self: False)

    @property
    def input(self) -> Any:
        if not self._decoded:
            self._input = _to_type(self._line.get("input"), self._type)
            self._decoded = True
        return self._input

    def progress(self, fraction: float, stage: Optional[str] = None) -> None:
        report = {"id": self.id, "progress": fraction}
        if stage is not None:
            report["stage"] = stage
        self._say(report)

    def stage(self, name: str) -> None:
        self._say({"id": self.id, "stage": name})

    def cost(self, cents: int) -> None:
        self._say({"id": self.id, "cost_cents": cents})

    # ---- durable steps, sleeps and waits: asked of the worker, answered on stdin

    def _ask(self, request: dict) -> dict:
        self._say({"id": self.id, **request})
        answer = json.loads(sys.stdin.readline() or "null")
        if not isinstance(answer, dict) or answer.get("id") != self.id:
            raise RuntimeError(f"the worker answered {answer!r} to {request!r}")
        if answer.get("parked"):
            raise Parked("parked")
        refused = answer.get("refused")
        if refused:
            from . import Permanent, Retry

            if refused.get("permanent"):
                raise Permanent(refused.get("message", "refused"), code=refused.get("code"))
            raise Retry(refused.get("message", "refused"), code=refused.get("code"))
        return answer

    def step(self, name: str, fn: Any) -> Any:
        if inspect.iscoroutinefunction(fn):
            return self.astep(name, fn)
        answer = self._ask({"step": name})
        if "stored" in answer:
            return answer["stored"]
        out = json.loads(_dumps(fn(), "output"))
        return self._ask({"step": name, "output": out})["stored"]

    async def astep(self, name: str, fn: Any) -> Any:
        answer = self._ask({"step": name})
        if "stored" in answer:
            return answer["stored"]
        out = fn()
        if inspect.isawaitable(out):
            out = await out
        out = json.loads(_dumps(out, "output"))
        return self._ask({"step": name, "output": out})["stored"]

    def sleep(self, duration: Any) -> None:
        self._ask({"sleep": _seconds(duration, "duration") or 0.0})

    def wait_for_event(self, name: str, timeout: Any = "7d") -> Any:
        return self._ask({"wait": name, "timeout": _seconds(timeout, "timeout") or 0.0}).get("event")

    def heartbeat(self) -> None:
        pass

    def dependency_outputs(self) -> dict:
        return dict(self._line.get("dependencies") or {})


def main(target: str) -> None:
    queue = load_queue(target)
    # The protocol has the real stdout to itself: file descriptor 1 becomes a copy of
    # stderr, so a handler's prints, a C library's writes and its subprocesses' output all
    # go to the worker's log instead.
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    loop: Optional[asyncio.AbstractEventLoop] = None

    def say(answer: dict) -> None:
        protocol.write(json.dumps(answer, separators=(",", ":")) + "\n")
        protocol.flush()

    for raw in sys.stdin:
        if not raw.strip():
            continue
        line = json.loads(raw)
        handler = queue.handlers.get(line["kind"])
        if handler is None:
            say({"id": line["id"], "error": {"message": f"no handler for kind {line['kind']!r} in {target}",
                                             "code": "NO_HANDLER", "permanent": True}})
            continue
        job = ChildJob(line, say, handler.input_type)
        if handler.is_async:
            loop = loop or asyncio.new_event_loop()
            answer = _outcome(lambda: loop.run_until_complete(handler.fn(job)))
        else:
            answer = _outcome(lambda: handler.fn(job))
        if answer[0] == "ok":
            protocol.write('{"id":' + json.dumps(line["id"]) + ',"ok":' + answer[1] + "}\n")
            protocol.flush()
        elif answer[0] == "park":
            say({"id": line["id"], "parked": True})
        elif answer[0] == "snooze":
            say({"id": line["id"], "snooze": f"{int(answer[1] * 1000)}ms"})
        else:
            _, message, code, permanent, after, detail = answer
            error: dict = {"message": message, "permanent": permanent}
            if code is not None:
                error["code"] = code
            if after is not None:
                error["retry_after"] = after
            if detail is not None:
                error["detail"] = detail
            say({"id": line["id"], "error": error})


if __name__ == "__main__":
    main(sys.argv[1])
