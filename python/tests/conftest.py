"""Fixtures of the package's tests: every test that takes ``db`` runs on both engines, a
fresh SQLite file and a fresh PostgreSQL database.

The PostgreSQL server is the one ``JOBQ_TEST_POSTGRES_URL`` names (a database of it is
created per test), or a throwaway cluster this session starts with ``initdb`` and ``pg_ctl``
(Debian's or any on the PATH; as the ``postgres`` user when run as root) and stops at the
end. Without either, the PostgreSQL half is skipped, unless ``JOBQ_REQUIRE_POSTGRES=1``
asks for it, when it fails instead. ``JOBQ_TEST_ENGINES=sqlite`` runs one half only.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

import jobq

HERE = Path(__file__).resolve().parent
ENGINES = [e for e in os.environ.get("JOBQ_TEST_ENGINES", "sqlite,postgres").split(",") if e]


def _pg_binaries() -> Optional[tuple[str, str, str]]:
    folders = os.environ.get("PATH", "").split(os.pathsep)
    folders += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in folders:
        names = [os.path.join(folder, n) for n in ("initdb", "pg_ctl", "psql")]
        if all(os.path.isfile(n) for n in names):
            return names[0], names[1], names[2]
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """A PostgreSQL server: ``database()`` makes a fresh database and returns its URL."""

    def __init__(self, base: str, query: str, psql: str, own: Optional[dict] = None):
        self.base = base
        self.query = query
        self.psql = psql
        self.own = own
        self.counter = itertools.count()

    def database(self) -> str:
        name = f"jobq_py_{os.getpid()}_{next(self.counter)}"
        done = subprocess.run([self.psql, f"{self.base}/postgres{self.query}", "-q", "-v", "ON_ERROR_STOP=1",
                               "-c", f"CREATE DATABASE {name}"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"cannot create the test database: {done.stderr.strip()}")
        return f"{self.base}/{name}{self.query}"

    def stop(self) -> None:
        if self.own is not None:
            _as_postgres([self.own["pg_ctl"], "stop", "-m", "immediate", "-w", "-D", self.own["data"]],
                         self.own["as_postgres"], check=False)
            shutil.rmtree(self.own["folder"], ignore_errors=True)


def _as_postgres(cmd: list, as_postgres: bool, check: bool = True) -> subprocess.CompletedProcess:
    if as_postgres:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {done.stderr.strip()}")
    return done


def _start_cluster(binaries: tuple[str, str, str]) -> PgServer:
    initdb, pg_ctl, psql = binaries
    folder = tempfile.mkdtemp(prefix="jobq-py-pg-")
    as_postgres = os.geteuid() == 0
    if as_postgres:
        shutil.chown(folder, "postgres", "postgres")
    data = os.path.join(folder, "data")
    _as_postgres([initdb, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "-D", data], as_postgres)
    port = _free_port()
    options = (f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400 "
               f"-c shared_buffers=64MB")
    done = _as_postgres([pg_ctl, "start", "-w", "-t", "60", "-D", data, "-l", os.path.join(folder, "log"),
                         "-o", options], as_postgres, check=False)
    if done.returncode != 0:
        log = Path(folder, "log").read_text() if Path(folder, "log").exists() else done.stderr
        raise RuntimeError(f"pg_ctl start failed: {log}")
    own = {"pg_ctl": pg_ctl, "data": data, "folder": folder, "as_postgres": as_postgres}
    return PgServer(f"postgres://postgres@127.0.0.1:{port}", "", psql, own)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Optional[PgServer]]:
    url = os.environ.get("JOBQ_TEST_POSTGRES_URL")
    binaries = _pg_binaries()
    required = os.environ.get("JOBQ_REQUIRE_POSTGRES") == "1"
    if url:
        rest, _, query = url.partition("?")
        scheme_end = rest.find("://") + 3
        slash = rest.find("/", scheme_end)
        base = rest if slash < 0 else rest[:slash]
        psql = binaries[2] if binaries else shutil.which("psql")
        if psql is None:
            raise RuntimeError("JOBQ_TEST_POSTGRES_URL is set but psql (to create test databases) is not found")
        yield PgServer(base, f"?{query}" if query else "", psql)
        return
    if binaries is None:
        if required:
            raise RuntimeError("JOBQ_REQUIRE_POSTGRES=1 but no PostgreSQL binaries (initdb, pg_ctl, psql) were "
                               "found and JOBQ_TEST_POSTGRES_URL is not set")
        yield None
        return
    server = _start_cluster(binaries)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=ENGINES)
def db(request: pytest.FixtureRequest, tmp_path: Path, pg_server: Optional[PgServer]) -> str:
    """A fresh database: a SQLite file, or a PostgreSQL database's URL."""
    if request.param == "sqlite":
        return str(tmp_path / "jobs.db")
    if pg_server is None:
        pytest.skip("no PostgreSQL server (set JOBQ_TEST_POSTGRES_URL or install PostgreSQL)")
    return pg_server.database()


@pytest.fixture
def queue(db: str) -> jobq.Queue:
    return jobq.Queue(db)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.db")


# ---- child processes ----------------------------------------------------------------------


class Child:
    """A Python program run as a real child process (killed if the test ends first)."""

    def __init__(self, code: str, env: Optional[dict] = None, cwd: Optional[Path] = None):
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                                     cwd=cwd, start_new_session=True)

    def wait_for_line(self, marker: str, timeout: float = 30) -> str:
        """Reads stdout until a line starts with ``marker``; returns it."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith(marker):
                return line.strip()
            if not line and self.proc.poll() is not None:
                raise AssertionError(f"the child exited ({self.proc.returncode}) before {marker!r}: "
                                     f"{self.proc.stderr.read() if self.proc.stderr else ''}")
        raise AssertionError(f"no {marker!r} from the child in {timeout} s")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> tuple[int, str, str]:
        """Waits for the child to exit: its code, stdout and stderr."""
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


@pytest.fixture
def child() -> Iterator:
    made: list[Child] = []

    def start(code: str, env: Optional[dict] = None, cwd: Optional[Path] = None) -> Child:
        c = Child(code, env, cwd)
        made.append(c)
        return c

    yield start
    for c in made:
        c.kill()


def wait_until(predicate, timeout: float = 30, what: str = "the condition") -> None:
    """Polls ``predicate`` every 20 ms until it is true; fails naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {timeout} s")
