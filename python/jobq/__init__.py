"""jobq: a durable job queue in one SQLite file, or in PostgreSQL for workers on many hosts.

The Python package holds the jobq library (written in Rust): the library claims jobs,
keeps their heartbeats, enforces timeouts and records outcomes in its own threads; Python
is called only for the handler, on the worker's own threads (or, with a process pool, in
warm child processes). Everything on the wire is JSON, never pickle: a job enqueued here is
read by the ``jobq`` command line, the dashboard, ``worker --exec`` handlers and Rust.

Example::

    import jobq

    q = jobq.Queue("jobs.db")                 # or "postgres://…"; owner="acme" to scope it

    @q.handler("resize", timeout="60s", max_attempts=5)
    def resize(job: jobq.Job) -> dict:
        job.progress(0.5, stage="resizing")
        return {"thumb": job.input["image"] + ".png"}

    h = q.enqueue("resize", {"image": "a"}, key="a")   # or resize.enqueue({"image": "a"})
    summary = q.worker(concurrency=4).run_until_idle()
    h.result(timeout=30)                      # {"thumb": "a.png"}
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import datetime as _dt
import inspect
import json
import signal
import threading
import time
import traceback
import typing
import weakref
from contextlib import contextmanager
from typing import Any, Callable, Generic, Iterable, Iterator, Mapping, Optional, Sequence, TypeVar, Union

from . import _jobq
from ._errors import (
    BudgetExceeded,
    Conflict,
    DatabaseError,
    Error,
    Forbidden,
    InvalidInput,
    JobFailed,
    NotFound,
    Parked,
    Timeout,
)

__all__ = [
    "Queue",
    "Job",
    "JobHandle",
    "Handler",
    "Worker",
    "Summary",
    "Flow",
    "FlowResult",
    "Transaction",
    "Permanent",
    "Retry",
    "Snooze",
    "Parked",
    "Error",
    "NotFound",
    "InvalidInput",
    "Conflict",
    "BudgetExceeded",
    "Forbidden",
    "Timeout",
    "JobFailed",
    "DatabaseError",
]

__version__ = _jobq.__version__

T = TypeVar("T")

#: A duration: ``"30s"``, ``"5m"``, ``"1h30m"``, ``"500ms"``, a ``timedelta``, or seconds.
Duration = Union[str, _dt.timedelta, int, float]

# How long a blocking call waits at a time before it lets Python look at its signals.
_SLICE = 0.2


def _seconds(value: Optional[Duration], field: str = "duration") -> Optional[float]:
    """A duration in seconds (None stays None)."""
    if value is None:
        return None
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise InvalidInput(f"invalid {field}: {value!r} is not a duration")
    if isinstance(value, (int, float)):
        if value < 0:
            raise InvalidInput(f"invalid {field}: {value!r} is negative")
        return float(value)
    if isinstance(value, str):
        try:
            return _jobq.parse_duration(value)
        except ValueError as e:
            raise InvalidInput(f"invalid {field}: {e}") from None
    raise InvalidInput(f"invalid {field}: {value!r} is not a duration such as '30s'")


def _millis(value: Optional[Duration], field: str) -> Optional[int]:
    s = _seconds(value, field)
    return None if s is None else int(round(s * 1000))


def _encode(value: Any) -> Any:
    """What ``json`` cannot write by itself: dataclasses, pydantic models, times, sets."""
    if hasattr(value, "model_dump") and callable(value.model_dump):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON (use a dict, a list, a dataclass or a pydantic model)")


# One encoder for every call (``json.dumps`` with options builds a new one each time).
_ENCODER = json.JSONEncoder(default=_encode, separators=(",", ":"), allow_nan=False)


def _dumps(value: Any, what: str = "input") -> str:
    """``value`` as JSON text; ``InvalidInput`` naming ``what`` when it is not JSON."""
    if value is None:
        return "null"
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as e:
        raise InvalidInput(f"invalid {what}: {e}") from None


def _to_type(value: Any, kind: Any) -> Any:
    """A JSON value as the handler's declared input type: a dataclass or a pydantic model
    (anything else is left as it is)."""
    if kind is None or kind is Any:
        return value
    if hasattr(kind, "model_validate"):
        return kind.model_validate(value)
    if dataclasses.is_dataclass(kind) and isinstance(value, dict):
        return kind(**value)
    return value


# ---- handler outcomes -------------------------------------------------------------------


class Permanent(Exception):
    """Raised by a handler: the job fails for good (the dead letter), with no retry."""

    def __init__(self, message: str, code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.code = code


class Retry(Exception):
    """Raised by a handler: this attempt failed; retry after ``after`` (else the retry
    policy's backoff) while attempts remain."""

    def __init__(self, message: str = "retry", after: Optional[Duration] = None, code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.after = _seconds(after, "after")
        self.code = code


class Snooze(Exception):
    """Raised by a handler: the job goes back to the queue for ``delay`` without spending
    its attempt (at least 1 s; a job snoozes at most 1,000 times)."""

    def __init__(self, delay: Duration = "30s"):
        super().__init__(f"snooze {delay}")
        self.seconds = _seconds(delay, "snooze") or 0.0


# ---- what a handler gets ----------------------------------------------------------------


class Job(Generic[T]):
    """The job a handler runs: its id, kind, attempt and input, and its line back to the
    queue. Reports (``progress``, ``stage``, ``cost``) are written at once, under the job's
    lease. Annotate the handler's parameter as ``Job[MyInput]`` (a dataclass or a pydantic
    model) and ``job.input`` is a ``MyInput``."""

    __slots__ = ("_native", "_input", "_type", "_decoded")

    def __init__(self, native: Any, input_type: Any = None):
        self._native = native
        self._type = input_type
        self._decoded = False
        self._input: Any = None

    @property
    def id(self) -> str:
        """The job's id."""
        return self._native.id

    @property
    def kind(self) -> str:
        """The job's kind."""
        return self._native.kind

    @property
    def attempt(self) -> int:
        """This attempt (1 for the first)."""
        return self._native.attempt

    @property
    def max_attempts(self) -> int:
        """The attempts the job may take."""
        return self._native.max_attempts

    @property
    def queue(self) -> str:
        """The job's queue."""
        return self._native.queue

    @property
    def owner(self) -> Optional[str]:
        """The job's owner."""
        return self._native.owner

    @property
    def group(self) -> Optional[str]:
        """The job's group (a flow's, for a job of a flow)."""
        return self._native.group

    @property
    def input(self) -> T:
        """The input: JSON, or the handler's declared input type."""
        if not self._decoded:
            self._input = _to_type(json.loads(self._native.input_json), self._type)
            self._decoded = True
        return self._input

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled (or taken from this worker, or timed out): a long
        handler should stop."""
        return self._native.cancelled

    def progress(self, fraction: float, stage: Optional[str] = None) -> None:
        """Sets the progress, 0 to 1, and the stage when given."""
        self._native.progress(fraction, stage)

    def stage(self, name: str) -> None:
        """Sets the stage."""
        self._native.stage(name)

    def cost(self, cents: int) -> None:
        """Adds to the job's cost, in cents."""
        self._native.cost(cents)

    def heartbeat(self) -> None:
        """Refreshes the job's heartbeat (any report does too; the worker does it by itself)."""
        self._native.heartbeat()

    # ---- durable steps, sleeps and waits

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """Runs ``fn`` once per job and returns its output (JSON): stored as ``fn``
        returns, and returned from storage when the job runs again (after a crash, a retry,
        a sleep or a wait) without calling ``fn``. Names are the identity: use each once per
        run. An ``async def`` function (or a ``functools.partial`` of one) makes it
        awaitable: ``await job.step("upload", upload)``; for a lambda that returns a
        coroutine, use ``await job.astep(...)``."""
        if inspect.iscoroutinefunction(fn):
            return self.astep(name, fn)
        stored = self._native.step_begin(name)
        if stored is not None:
            return json.loads(stored)
        text = _dumps(fn(), "output")
        self._native.step_end(name, text)
        return json.loads(text)

    async def astep(self, name: str, fn: Callable[[], Any]) -> Any:
        """``job.step`` in an ``async def`` handler: ``fn`` may return a value or an
        awaitable (a coroutine), which is awaited; not called at all when the step is
        stored."""
        stored = self._native.step_begin(name)
        if stored is not None:
            return json.loads(stored)
        out = fn()
        if inspect.isawaitable(out):
            out = await out
        text = _dumps(out, "output")
        self._native.step_end(name, text)
        return json.loads(text)

    def sleep(self, duration: Duration) -> None:
        """Parks the job for ``duration`` (``"1h"``, seconds or a ``timedelta``): returns
        once the time has come; until then raises ``jobq.Parked``, which ends the run and
        leaves the job ``waiting`` (no slot held, no attempt spent). The wake time is stored
        at the first call: running again does not sleep again."""
        self._native.sleep(_seconds(duration, "duration") or 0.0)

    def wait_for_event(self, name: str, timeout: Duration = "7d") -> Any:
        """Waits for the event ``name`` (``queue.emit_event``) at most ``timeout``: its
        payload once it is there, ``None`` at the timeout; until then raises
        ``jobq.Parked`` (the job is ``waiting``). An event emitted after the job was created
        counts even if it came before the wait; the payload is stored, so running again
        returns the same."""
        text = self._native.wait_for_event(name, _seconds(timeout, "timeout") or 0.0)
        return None if text is None else json.loads(text)

    def dependency_outputs(self) -> dict:
        """The outputs of the jobs this job waits for, by their flow ref (by id for those
        without one)."""
        return json.loads(self._native.dependency_outputs_json())

    def __repr__(self) -> str:
        return f"<jobq.Job {self.kind} {self.id} attempt {self.attempt}>"


def _user_frames(tb: Any) -> Any:
    """A traceback from the handler's first frame on (the package's own frames left out)."""
    while tb is not None and tb.tb_next is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return tb


def _cause_detail(e: BaseException) -> Optional[str]:
    """The traceback of what a ``Permanent`` or ``Retry`` was raised from, if anything."""
    cause = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    if cause is None:
        return None
    return "".join(traceback.format_exception(type(cause), cause, _user_frames(cause.__traceback__)))


def _outcome(call: Callable[[], Any]) -> tuple:
    """Runs a handler and turns what it did into the tuple the native worker reads."""
    try:
        out = call()
    except Parked:
        return ("park",)
    except Snooze as s:
        return ("snooze", s.seconds)
    except Permanent as p:
        return ("error", p.message, p.code, True, None, _cause_detail(p))
    except Retry as r:
        return ("error", r.message, r.code, False, r.after, _cause_detail(r))
    except Exception as e:  # a failed attempt, retried while attempts remain
        detail = "".join(traceback.format_exception(type(e), e, _user_frames(e.__traceback__)))
        return ("error", str(e) or type(e).__name__, type(e).__name__, False, None, detail)
    try:
        return ("ok", _dumps(out, "output"))
    except InvalidInput as e:
        return ("error", f"the handler's {e}", "OUTPUT", True, None, None)


def _input_type(fn: Callable, given: Any, localns: Optional[dict] = None) -> Any:
    """The type a handler wants its input as: given, or ``Job[T]``'s ``T`` (``localns``:
    the names of the scope the handler was defined in, for a type defined there)."""
    if given is not None:
        return given
    try:
        hints = typing.get_type_hints(fn, localns=localns)
    except Exception:
        return None
    params = [p for p in inspect.signature(fn).parameters.values()]
    if not params:
        return None
    hint = hints.get(params[0].name)
    if typing.get_origin(hint) is Job:
        args = typing.get_args(hint)
        return args[0] if args else None
    return None


class Handler:
    """A function registered by ``@queue.handler(kind)``: still callable as it was, and
    ``.enqueue(input, **options)`` enqueues a job of its kind."""

    def __init__(self, queue: "Queue", kind: str, fn: Callable, timeout: Optional[float],
                 max_attempts: Optional[int], input_type: Any, localns: Optional[dict] = None):
        self.queue = queue
        self.kind = kind
        self.fn = fn
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.input_type = _input_type(fn, input_type, localns)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", kind)
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def enqueue(self, input: Any = None, **options: Any) -> "JobHandle":
        """Enqueues a job of this handler's kind (options as ``Queue.enqueue``)."""
        return self.queue.enqueue(self.kind, input, **options)

    def enqueue_many(self, inputs: Iterable[Any], **options: Any) -> list["JobHandle"]:
        """Enqueues a job of this handler's kind per input, in one transaction (options as
        ``Queue.enqueue``, the same for each)."""
        return self.queue.enqueue_many([(self.kind, input, options) for input in inputs])

    def wrapper(self, loop: Callable[[], asyncio.AbstractEventLoop]) -> Callable[[Any], tuple]:
        """What the native worker calls for a job: the handler, its outcome as a tuple."""
        fn, input_type = self.fn, self.input_type
        if self.is_async:
            def call(native: Any) -> tuple:
                job = Job(native, input_type)
                return _outcome(lambda: asyncio.run_coroutine_threadsafe(fn(job), loop()).result())
        else:
            def call(native: Any) -> tuple:
                job = Job(native, input_type)
                return _outcome(lambda: fn(job))
        return call


# ---- a job enqueued ---------------------------------------------------------------------


class JobHandle:
    """A job enqueued: its ``id``, whether its key named a job already, and ways to follow
    it (``status()``, ``job()``) and to wait for its output (``result()``, ``aresult()``)."""

    __slots__ = ("queue", "id", "already_existed", "_status")

    def __init__(self, queue: "Queue", id: str, status: str = "queued", already_existed: bool = False):
        self.queue = queue
        self.id = id
        self.already_existed = already_existed
        self._status = status

    def status(self) -> str:
        """The job's status now (``scheduled`` for one whose time lies ahead)."""
        return self.queue._native.status(self.id)

    def job(self) -> dict:
        """The whole job (the document of ``jobq show --json``)."""
        return self.queue.get(self.id)

    def _outcome(self, doc: str) -> Any:
        job = json.loads(doc)
        if job["status"] == "succeeded":
            return job.get("output")
        code = job.get("error_code") or ("CANCELLED" if job["status"] == "cancelled" else None)
        message = job.get("last_error") or f"the job was {job['status']}"
        raise JobFailed(message, code, job)

    def result(self, timeout: Optional[Duration] = None) -> Any:
        """Waits for the job to finish and returns its output; raises ``JobFailed`` when it
        failed for good or was cancelled, ``Timeout`` when ``timeout`` passes first. The
        wait releases the GIL and Ctrl-C interrupts it."""
        limit = _seconds(timeout, "timeout")
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            left = _SLICE if deadline is None else min(_SLICE, max(0.0, deadline - time.monotonic()))
            doc = self.queue._native.wait(self.id, left)
            if doc is not None:
                return self._outcome(doc)
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"job {self.id} is still {self.status()} after waiting {limit:g} s")

    async def aresult(self, timeout: Optional[Duration] = None) -> Any:
        """``result()`` for async code: waits without blocking the event loop."""
        limit = _seconds(timeout, "timeout")
        deadline = None if limit is None else time.monotonic() + limit
        native = self.queue._native
        while True:
            left = _SLICE if deadline is None else min(_SLICE, max(0.0, deadline - time.monotonic()))
            doc = await asyncio.to_thread(native.wait, self.id, left)
            if doc is not None:
                return self._outcome(doc)
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"job {self.id} is still {self.status()} after waiting {limit:g} s")

    def __repr__(self) -> str:
        return f"<jobq.JobHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


# ---- flows --------------------------------------------------------------------------------


# The enqueue options a flow's job takes, as the JSON of ``POST /api/flows`` names them.
_FLOW_FIELDS = {
    "queue": "queue",
    "priority": "priority",
    "max_attempts": "max_attempts",
    "key": "idempotency_key",
    "unique_while_active": "unique_while_active",
    "on_dependency_failure": "on_dependency_failure",
    "concurrency_key": "concurrency_key",
    "cost_cents": "cost_cents",
    "external_id": "external_id",
}


class Flow:
    """Jobs that wait for each other, named by local refs, submitted whole: all of them or
    none (``Queue.submit_flow``). A job's ``after`` names refs of the flow or ids of jobs
    that exist; a handler reads its dependencies' outputs by ref
    (``job.dependency_outputs()``)."""

    def __init__(self, name: str, metadata: Optional[dict] = None, key: Optional[str] = None):
        self.name = name
        self.metadata = metadata
        self.key = key
        self._jobs: list[dict] = []

    def job(self, ref: str, kind: str, input: Any = None, *, after: Sequence[Union[str, JobHandle]] = (),
            run_after: Optional[Duration] = None, unique_for: Optional[Duration] = None,
            **options: Any) -> "Flow":
        """Adds a job named ``ref``; options as ``Queue.enqueue``."""
        job: dict = {"ref": ref, "kind": kind}
        if input is not None:
            job["input"] = json.loads(_dumps(input))
        if after:
            job["after"] = [a.id if isinstance(a, JobHandle) else a for a in after]
        if run_after is not None:
            job["run_after"] = f"{_millis(run_after, 'run_after')}ms"
        if unique_for is not None:
            job["unique_for"] = f"{_millis(unique_for, 'unique_for')}ms"
        for name, value in options.items():
            if name not in _FLOW_FIELDS:
                raise InvalidInput(f"invalid {name}: not an option of a flow's job")
            if value is not None:
                job[_FLOW_FIELDS[name]] = value
        self._jobs.append(job)
        return self

    def document(self) -> dict:
        """The flow as the JSON of ``POST /api/flows`` (and ``jobq flow submit``)."""
        doc: dict = {"group": {"name": self.name}, "jobs": self._jobs}
        if self.metadata is not None:
            doc["group"]["metadata"] = self.metadata
        if self.key is not None:
            doc["key"] = self.key
        return doc


class FlowResult(Mapping[str, JobHandle]):
    """A submitted flow: its ``group_id``, each ref's ``JobHandle`` (``result[ref]``), and
    ``already_existed`` when its key named a flow submitted before."""

    def __init__(self, queue: "Queue", doc: dict):
        self.group_id: str = doc["group_id"]
        self.already_existed: bool = doc.get("already_existed", False)
        self._jobs = {ref: JobHandle(queue, id) for ref, id in doc["jobs"].items()}

    def __getitem__(self, ref: str) -> JobHandle:
        return self._jobs[ref]

    def __iter__(self) -> Iterator[str]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    def __repr__(self) -> str:
        return f"<jobq.FlowResult {self.group_id} {list(self._jobs)}>"


# ---- the application's own transaction -------------------------------------------------


class Transaction:
    """The application's transaction on the queue's database: its own statements
    (``execute``) and jobs (``enqueue``) commit together, or neither."""

    def __init__(self, queue: "Queue", native: Any):
        self.queue = queue
        self._native = native

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Runs a statement of the application's (``?`` placeholders on SQLite, ``$1`` on
        PostgreSQL); returns the rows it changed."""
        return self._native.execute(sql, list(params))

    def enqueue(self, kind: str, input: Any = None, **options: Any) -> JobHandle:
        """Enqueues a job in the transaction (options as ``Queue.enqueue``)."""
        input_json, opts = self.queue._enqueue_args(kind, input, options)
        id, status, existed = self._native.enqueue(kind, input_json, opts)
        return JobHandle(self.queue, id, status, existed)


# ---- the queue ------------------------------------------------------------------------------


_UNSET: Any = object()


class Queue:
    """A durable job queue: a SQLite file, or a ``postgres://`` URL (the same rules and data
    on both). ``Queue(db, owner="acme")`` sees and changes only that owner's jobs, and
    stamps it on what it creates.

    Every call is one transaction in the library, with the GIL released meanwhile."""

    def __init__(self, db: str = "jobq.db", *, owner: Optional[str] = None,
                 max_snoozes: Optional[int] = None, max_schedules_per_owner: Optional[int] = None,
                 default_max_attempts: Optional[int] = None):
        self._native = _jobq.Queue(str(db), owner, max_snoozes, max_schedules_per_owner, default_max_attempts)
        self.handlers: dict[str, Handler] = {}

    @classmethod
    def _wrap(cls, native: Any) -> "Queue":
        q = cls.__new__(cls)
        q._native = native
        q.handlers = {}
        return q

    def scoped(self, owner: str) -> "Queue":
        """The same database, seeing and changing only ``owner``'s jobs (handlers are
        shared)."""
        q = Queue._wrap(self._native.scoped(owner))
        q.handlers = self.handlers
        return q

    @property
    def path(self) -> str:
        """The database as given (a URL with its password)."""
        return self._native.path

    @property
    def location(self) -> str:
        """The database for people to read (a URL without its password)."""
        return self._native.location

    @property
    def owner(self) -> Optional[str]:
        """The owner this queue is scoped to."""
        return self._native.owner

    @property
    def engine(self) -> str:
        """``sqlite`` or ``postgres``."""
        return self._native.engine

    # ---- handlers and workers

    def handler(self, kind: str, *, timeout: Optional[Duration] = None, max_attempts: Optional[int] = None,
                input: Any = None) -> Callable[[Callable], Handler]:
        """Registers a handler for jobs of ``kind`` (``def`` or ``async def``, taking a
        ``jobq.Job``). ``timeout``: a run past it fails with ``TIMEOUT``; ``max_attempts``:
        the default for jobs of this kind; ``input``: the type the input is read as (by
        default the ``T`` of a ``Job[T]`` annotation: a dataclass or a pydantic model).

        What the handler returns (JSON, a dataclass, a pydantic model) is the job's output;
        ``raise jobq.Permanent(...)``, ``jobq.Retry(...)`` or ``jobq.Snooze(...)`` end it
        otherwise; any other exception is a failed attempt, retried while attempts remain
        (code: the exception's class name; its traceback is kept with the error)."""
        seconds = _seconds(timeout, "timeout")

        def register(fn: Callable) -> Handler:
            # The scope the handler is defined in, for a Job[T] whose T is defined there.
            caller = inspect.currentframe()
            localns = dict(caller.f_back.f_locals) if caller is not None and caller.f_back is not None else None
            h = Handler(self, kind, fn, seconds, max_attempts, input, localns)
            self.handlers[kind] = h
            return h

        return register

    def worker(self, concurrency: int = 4, *, queues: Sequence[str] = (), poll_interval: Duration = "1s",
               heartbeat_interval: Optional[Duration] = None, grace: Duration = "30s",
               kinds: Optional[Sequence[str]] = None, prefetch: Optional[int] = None,
               heartbeat_timeout: Optional[Duration] = None,
               maintenance_interval: Optional[Duration] = None) -> "Worker":
        """A worker for this queue's handlers (``kinds``: only some of them), running
        ``concurrency`` jobs at once on threads of its own. ``run_until_idle()``,
        ``run()`` (until SIGINT or SIGTERM), or ``start()`` and later ``stop()``. Options as
        ``Worker``'s."""
        return Worker(self, concurrency=concurrency, queues=queues, poll_interval=poll_interval,
                      heartbeat_interval=heartbeat_interval, grace=grace, kinds=kinds, prefetch=prefetch,
                      heartbeat_timeout=heartbeat_timeout, maintenance_interval=maintenance_interval)

    def release_stale(self, heartbeat_timeout: Duration = "60s") -> int:
        """Puts back in the queue the running jobs whose heartbeat is older than
        ``heartbeat_timeout`` (their worker died or hangs), as ``jobq release-stale`` does;
        returns how many. Workers do it by themselves every 30 s."""
        return self._native.release_stale(_seconds(heartbeat_timeout, "heartbeat_timeout"))

    # ---- enqueue

    def _enqueue_args(self, kind: str, input: Any, options: dict) -> tuple:
        opts: dict = {}
        for name, value in options.items():
            if value is None:
                continue
            if name == "run_after":
                if isinstance(value, _dt.datetime):
                    if value.tzinfo is None:
                        raise InvalidInput("invalid run_after: a datetime needs its time zone")
                    opts["run_at_ms"] = int(value.timestamp() * 1000)
                else:
                    opts["delay_ms"] = _millis(value, "run_after")
            elif name == "unique_for":
                opts["unique_for_ms"] = _millis(value, "unique_for")
            elif name == "after":
                opts["after"] = [a.id if isinstance(a, JobHandle) else str(a) for a in value]
            elif name in ("queue", "priority", "max_attempts", "key", "unique_while_active",
                          "on_dependency_failure", "concurrency_key", "group", "cost_cents",
                          "external_id", "owner"):
                opts[name] = value
            else:
                raise InvalidInput(f"invalid {name}: not an option of enqueue")
        handler = self.handlers.get(kind)
        if handler is not None and handler.max_attempts is not None:
            opts.setdefault("max_attempts", handler.max_attempts)
        input_json = None if input is None else _dumps(input)
        return input_json, opts

    def enqueue(self, kind: str, input: Any = None, *, queue: Optional[str] = None, priority: int = 0,
                run_after: Optional[Union[Duration, _dt.datetime]] = None, max_attempts: Optional[int] = None,
                key: Optional[str] = None, unique_for: Optional[Duration] = None, unique_while_active: bool = False,
                after: Sequence[Union[str, JobHandle]] = (), on_dependency_failure: Optional[str] = None,
                concurrency_key: Optional[str] = None, group: Optional[str] = None, cost_cents: int = 0,
                external_id: Optional[str] = None, owner: Optional[str] = None) -> JobHandle:
        """Enqueues a job of ``kind`` with ``input`` (any JSON value, a dataclass or a
        pydantic model) and the options of ``jobq enqueue``: a repeated ``key`` returns the
        first job (``already_existed``); ``after`` makes it wait for other jobs; ``run_after``
        is a delay or a ``datetime``. Durations are ``"30s"`` strings or ``timedelta``s."""
        # Only the options given are looked at (this is the hot path of enqueueing).
        given: dict = {}
        if queue is not None:
            given["queue"] = queue
        if priority:
            given["priority"] = priority
        if run_after is not None:
            given["run_after"] = run_after
        if max_attempts is not None:
            given["max_attempts"] = max_attempts
        if key is not None:
            given["key"] = key
        if unique_for is not None:
            given["unique_for"] = unique_for
        if unique_while_active:
            given["unique_while_active"] = True
        if after:
            given["after"] = after
        if on_dependency_failure is not None:
            given["on_dependency_failure"] = on_dependency_failure
        if concurrency_key is not None:
            given["concurrency_key"] = concurrency_key
        if group is not None:
            given["group"] = group
        if cost_cents:
            given["cost_cents"] = cost_cents
        if external_id is not None:
            given["external_id"] = external_id
        if owner is not None:
            given["owner"] = owner
        input_json, opts = self._enqueue_args(kind, input, given)
        id, status, existed = self._native.enqueue(kind, input_json, opts or None)
        return JobHandle(self, id, status, existed)

    def enqueue_many(self, jobs: Iterable[Union[tuple, "Sequence[Any]"]]) -> list[JobHandle]:
        """Enqueues many jobs in one transaction, all of them or none: each is ``(kind,
        input)`` or ``(kind, input, options)`` with ``options`` a dict of ``enqueue``'s
        keyword arguments. Far faster than one ``enqueue`` per job."""
        batch = []
        for i, item in enumerate(jobs):
            if not isinstance(item, (tuple, list)) or not 1 <= len(item) <= 3:
                raise InvalidInput(f"invalid jobs[{i}]: {item!r} is not (kind, input) or (kind, input, options)")
            kind = item[0]
            input = item[1] if len(item) > 1 else None
            options = dict(item[2]) if len(item) > 2 and item[2] is not None else {}
            input_json, opts = self._enqueue_args(kind, input, options)
            batch.append((kind, input_json, opts))
        return [JobHandle(self, id, status, existed) for id, status, existed in self._native.enqueue_many(batch)]

    def handle(self, id: str) -> JobHandle:
        """A handle on the job ``id``, to follow it or wait for it."""
        return JobHandle(self, id)

    def submit_flow(self, flow: Flow) -> FlowResult:
        """Creates a flow — its group and all its jobs — in one transaction: all or none."""
        return FlowResult(self, json.loads(self._native.submit_flow(json.dumps(flow.document()))))

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """``with q.transaction() as tx:`` — the application's writes (``tx.execute``) and
        its jobs (``tx.enqueue``) commit together when the block ends, or roll back together
        when it raises."""
        native = self._native.transaction()
        tx = Transaction(self, native)
        try:
            yield tx
        except BaseException:
            native.rollback()
            raise
        native.commit()

    # ---- reading and changing jobs

    def get(self, id: str) -> dict:
        """The job with every field, its dependencies and errors (``jobq show --json``)."""
        return json.loads(self._native.get(id))

    def list(self, *, status: Optional[str] = None, kind: Optional[str] = None, queue: Optional[str] = None,
             group: Optional[str] = None, search: Optional[str] = None, limit: int = 50,
             after: Optional[str] = None) -> dict:
        """A page of jobs, newest first: ``{"jobs": [...], "next": cursor or None}``
        (``jobq list --json``). ``status`` may be ``scheduled``; ``search`` finds a job by id
        or its start, idempotency key or external id."""
        return json.loads(self._native.list(status, kind, queue, group, None, search, limit, after))

    def stats(self) -> dict:
        """Counts by status, health and summary (``jobq stats --json``)."""
        return json.loads(self._native.stats())

    def series(self, window: Duration = "1h", step: Duration = "1m", *,
               queue: Optional[str] = None, kind: Optional[str] = None) -> dict:
        """Counts and latencies over time (``jobq stats --series --json``): ``{"step_s",
        "points": [{"t", "enqueued", "started", "succeeded", "failed", "retried",
        "cancelled", "snoozed", "run_ms": {"p50", "p95", "p99"}, "wait_ms": {…}}]}``, oldest
        first, one point per step (``None`` percentiles where nothing was measured). A
        handle scoped to an owner sees its owner's jobs only."""
        return json.loads(self._native.series(_seconds(window, "window"), _seconds(step, "step"),
                                              queue, kind))

    def _action(self, verb: str, done: str, id: str) -> dict:
        was = getattr(self._native, verb)(id)
        return {"success": True, "job_id": id, "previous_status": was,
                "message": f"Job {id} {done} (it was {was})"}

    def cancel(self, id: str) -> dict:
        """Cancels a job (a running one's handler is told)."""
        return self._action("cancel", "cancelled", id)

    def retry(self, id: str) -> dict:
        """Puts a failed or cancelled job back in the queue."""
        return self._action("retry", "queued again", id)

    def retry_from_scratch(self, id: str) -> dict:
        """Puts a failed or cancelled job back in the queue, forgetting its stored steps: it
        runs again from scratch (``retry`` keeps them)."""
        return self._action("retry_from_scratch", "queued again from scratch", id)

    def delete(self, id: str) -> dict:
        """Deletes a job that is not running."""
        return self._action("delete", "deleted", id)

    def emit_event(self, name: str, payload: Any = None) -> dict:
        """Stores an event and wakes every job of this queue's owner waiting for ``name``
        (``job.wait_for_event``); one that waits only later still finds it. Returns
        ``{"id", "woken"}``."""
        id, woken = self._native.emit_event(name, _dumps(payload, "payload"))
        return {"id": id, "woken": woken}

    def steps(self, id: str) -> list:
        """The stored steps of a job (its steps, sleeps and waits): ``[{"name",
        "position", "kind", "output", "event", "event_id", "wake_at", "started_at",
        "ended_at"}]``, in the order they began."""
        return json.loads(self._native.steps(id))

    # ---- schedules and queues

    def add_schedule(self, name: str, kind: str, *, cron: Optional[str] = None, every: Optional[Duration] = None,
                     input: Any = None, timezone: Optional[str] = None, catch_up: Optional[str] = None,
                     queue: Optional[str] = None, priority: int = 0, max_attempts: Optional[int] = None,
                     owner: Optional[str] = None, replace: bool = False) -> dict:
        """A periodic job: a cron expression (in ``timezone``) or a fixed interval; each slot
        fires once across every process. ``replace`` changes an existing one in place."""
        doc = self._native.add_schedule(
            name, kind, cron=cron, every_ms=_millis(every, "every"),
            input_json=None if input is None else _dumps(input), queue=queue, priority=priority,
            max_attempts=max_attempts, timezone=timezone, catch_up=catch_up, owner=owner, replace=replace)
        return json.loads(doc)

    def schedules(self) -> list:
        """Every schedule this queue sees."""
        return json.loads(self._native.schedules())

    def remove_schedule(self, name: str) -> None:
        """Removes a schedule (the jobs it enqueued stay)."""
        self._native.remove_schedule(name)

    def pause_schedule(self, name: str) -> dict:
        """Pauses a schedule."""
        return json.loads(self._native.schedule_action(name, "pause"))

    def resume_schedule(self, name: str) -> dict:
        """Resumes a schedule from its next slot."""
        return json.loads(self._native.schedule_action(name, "resume"))

    def run_schedule(self, name: str) -> JobHandle:
        """Enqueues one of the schedule's jobs now (its slots are unchanged)."""
        doc = json.loads(self._native.schedule_action(name, "run"))
        return JobHandle(self, doc["job_id"], doc["status"], doc["already_existed"])

    def pause_queue(self, name: str) -> dict:
        """Pauses a queue: no process claims from it until it is resumed."""
        return json.loads(self._native.pause_queue(name, True))

    def resume_queue(self, name: str) -> dict:
        """Resumes a paused queue."""
        return json.loads(self._native.pause_queue(name, False))

    def set_queue_limits(self, name: str, *, max_running: Any = _UNSET, max_running_per_key: Any = _UNSET,
                         rate: Any = _UNSET) -> dict:
        """Limits that hold across every process and host: running jobs of the queue,
        running jobs per concurrency key, claims per window (``"100/1m"``). ``None`` clears
        one; one not given is left as it is."""
        limits = {k: v for k, v in (("max_running", max_running), ("max_running_per_key", max_running_per_key),
                                    ("rate", rate)) if v is not _UNSET}
        return json.loads(self._native.set_queue_limits(name, json.dumps(limits)))

    def queues(self) -> list:
        """Every queue with its counts and limits."""
        return json.loads(self._native.queues())

    def __repr__(self) -> str:
        scope = f" owner={self.owner!r}" if self.owner else ""
        return f"<jobq.Queue {self.location}{scope}>"


# ---- workers --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a worker did: jobs processed (each once, however many attempts), succeeded,
    failed for good, attempts retried, jobs released unstarted, snoozes, jobs parked (a
    sleep or a wait)."""

    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    snoozed: int = 0
    parked: int = 0
    attempts: int = 0
    lost: int = 0


class _LoopThread:
    """An event loop on a thread of its own, for a worker's ``async def`` handlers (never
    the default executor: a handler's own ``to_thread`` calls cannot starve it)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="jobq-asyncio", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


# Workers that run, stopped at once when the interpreter exits (their threads must not call
# into an interpreter that is going away): their jobs are released for the next worker.
_running: "weakref.WeakSet[Worker]" = weakref.WeakSet()


@atexit.register
def _stop_running_workers() -> None:
    _jobq.interpreter_exiting()
    for worker in list(_running):
        if worker._native is not None and worker._summary is None:
            worker._native.stop_now()
            worker.join(5)


class Worker:
    """Runs a queue's handlers on threads of its own; the library claims, heartbeats and
    records. ``run_until_idle()`` drains what is ready; ``run()`` runs until SIGINT or
    SIGTERM (then stops claiming, lets running jobs finish within ``grace`` and releases
    the rest, as ``jobq worker`` does); ``start()`` runs it in the background until
    ``stop()``.

    Options: ``concurrency`` handler threads; ``queues`` served (``["default"]``);
    ``poll_interval``, how often an idle worker looks for work from other processes (work
    enqueued in this process wakes it at once); ``heartbeat_interval`` (5 s), how often
    running jobs' heartbeats are written, by the library's own thread, GIL or not;
    ``heartbeat_timeout`` (60 s), when this worker's maintenance puts back other workers'
    jobs whose heartbeat stopped (their process died); ``maintenance_interval`` (30 s);
    ``grace``; ``kinds``, only some handlers; ``prefetch``, jobs claimed ahead."""

    def __init__(self, queue: Queue, *, concurrency: int = 4, queues: Sequence[str] = (),
                 poll_interval: Duration = "1s", heartbeat_interval: Optional[Duration] = None,
                 grace: Duration = "30s", kinds: Optional[Sequence[str]] = None, prefetch: Optional[int] = None,
                 heartbeat_timeout: Optional[Duration] = None, maintenance_interval: Optional[Duration] = None):
        handlers = {k: h for k, h in queue.handlers.items() if kinds is None or k in kinds}
        if not handlers:
            raise InvalidInput("invalid handlers: register one with @queue.handler(kind) first")
        self.queue = queue
        self.handlers = handlers
        self.concurrency = concurrency
        self.queues = list(queues)
        self.poll_interval = _seconds(poll_interval, "poll_interval")
        self.heartbeat_interval = _seconds(heartbeat_interval, "heartbeat_interval")
        self.grace = _seconds(grace, "grace")
        self.prefetch = prefetch
        self.heartbeat_timeout = _seconds(heartbeat_timeout, "heartbeat_timeout")
        self.maintenance_interval = _seconds(maintenance_interval, "maintenance_interval")
        self._native: Any = None
        self._loop: Optional[_LoopThread] = None
        self._summary: Optional[Summary] = None

    def _loop_of(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop.loop

    def _start(self, once: bool) -> None:
        if self._native is not None:
            raise Conflict("invalid worker: it is running already")
        if any(h.is_async for h in self.handlers.values()):
            self._loop = _LoopThread()
        handlers = [(k, h.wrapper(self._loop_of), h.timeout) for k, h in self.handlers.items()]
        self._native = _jobq.Worker(
            self.queue._native, handlers, concurrency=self.concurrency, queues=self.queues,
            poll_interval=self.poll_interval, heartbeat_interval=self.heartbeat_interval,
            grace=self.grace, once=once, prefetch=self.prefetch, heartbeat_timeout=self.heartbeat_timeout,
            maintenance_interval=self.maintenance_interval)
        _running.add(self)

    @property
    def worker_id(self) -> Optional[str]:
        """The running worker's id (``host-pid-random``)."""
        return None if self._native is None else self._native.worker_id

    def start(self) -> "Worker":
        """Starts the worker in the background; ``stop()`` stops it."""
        self._start(once=False)
        return self

    def join(self, timeout: Optional[Duration] = None) -> Optional[Summary]:
        """Waits for the worker to stop (up to ``timeout``); its summary, or ``None`` while
        it runs on. Ctrl-C interrupts the wait."""
        if self._summary is not None:
            return self._summary
        if self._native is None:
            raise Conflict("invalid worker: it was never started")
        limit = _seconds(timeout, "timeout")
        deadline = None if limit is None else time.monotonic() + limit
        while True:
            left = _SLICE if deadline is None else min(_SLICE, max(0.0, deadline - time.monotonic()))
            done = self._native.join(left)
            if done is not None:
                self._summary = Summary(**done)
                if self._loop is not None:
                    self._loop.stop()
                return self._summary
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def stop(self, grace: Optional[Duration] = None) -> Summary:
        """Stops claiming; running jobs finish within ``grace`` (the worker's by default),
        then whatever still runs is released. Returns the summary."""
        if self._native is None:
            raise Conflict("invalid worker: it was never started")
        self._native.stop()
        limit = self.grace if grace is None else _seconds(grace, "grace")
        done = self.join(limit)
        if done is None:
            self._native.stop_now()
            done = self.join()
        assert done is not None
        return done

    def run_until_idle(self) -> Summary:
        """Runs every ready job of the handlers' kinds and returns once nothing is ready and
        nothing runs (the ``--once`` of a worker). A job snoozed in the run is left for the
        next."""
        self._start(once=True)
        try:
            done = self.join()
        except BaseException:
            self._native.stop_now()
            self.join()
            raise
        assert done is not None
        return done

    def run(self) -> Summary:
        """Runs until SIGTERM or SIGINT: then it stops claiming, lets running jobs finish
        within the grace period and releases the rest (a second signal releases them at
        once). SIGTERM returns the summary; SIGINT raises ``KeyboardInterrupt`` once the
        worker has stopped."""
        self._start(once=False)
        signals: list = []
        previous: dict = {}

        def note(signum: int, frame: Any) -> None:
            signals.append(signum)

        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            for s in (signal.SIGINT, signal.SIGTERM):
                previous[s] = signal.signal(s, note)
        try:
            asked = 0
            while True:
                done = self._native.join(_SLICE)
                if done is not None:
                    self._summary = Summary(**done)
                    break
                if len(signals) > asked:
                    asked = len(signals)
                    if asked == 1:
                        self._native.stop()
                    else:
                        self._native.stop_now()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if self._loop is not None:
                self._loop.stop()
        if signal.SIGINT in signals and signal.SIGTERM not in signals:
            raise KeyboardInterrupt
        return self._summary
