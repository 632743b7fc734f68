"""The exceptions of jobq: every refusal is one of these, with a message that names the
job (or whatever else) and what was wrong."""

from __future__ import annotations

from typing import Any


class Error(Exception):
    """Anything jobq refuses or cannot do. A refused call changed nothing."""


class NotFound(Error):
    """The job, group, schedule or owner does not exist, or belongs to another owner than
    the one the queue is scoped to (a scoped queue cannot tell the two apart)."""


class InvalidInput(Error, ValueError):
    """A value given to jobq is not acceptable; the message names the field and says why.
    (Also a ``ValueError``.)"""


class Conflict(Error):
    """The job's status does not allow what was asked (cancelling a job that succeeded,
    retrying one that is queued), or a name is taken."""


class BudgetExceeded(Error):
    """Enqueueing would take the owner past its budget. Nothing was written."""


class Forbidden(Error):
    """A queue scoped to an owner asked for something only an unscoped queue may do."""


class Timeout(Error, TimeoutError):
    """A wait reached its deadline first. The job goes on; wait again, or look later.
    (Also a ``TimeoutError``.)"""


class DatabaseError(Error):
    """The database could not do it: busy for too long, unavailable, full, damaged, or not
    a jobq database. Trying again later may succeed."""


class JobFailed(Error):
    """The job ended without succeeding: failed for good (the dead letter) or cancelled.

    `code` and `message` are its last error's; `job` is the whole job document (its
    `errors` hold every failed attempt, with tracebacks)."""

    def __init__(self, message: str, code: str | None = None, job: dict[str, Any] | None = None):
        job = job or {}
        what = f"job {job['id']} ({job.get('kind')}) {job.get('status')}" if "id" in job else "the job failed"
        super().__init__(f"{what}: {code}: {message}" if code else f"{what}: {message}")
        self.message = message
        self.code = code
        self.job = job

    @property
    def job_id(self) -> str | None:
        """The job's id."""
        return self.job.get("id")


class Parked(BaseException):
    """Raised by ``job.sleep`` and ``job.wait_for_event`` until the time has come or the
    event is there: it ends the run, and the worker records the job as ``waiting`` (no
    slot held, no attempt spent); the job runs again from the top later, its finished
    steps replayed. Let it pass: it is a ``BaseException``, so ``except Exception`` does
    not catch it."""
