"""A throw-away PostgreSQL server for tests: initdb into a temporary directory, listen on 127.0.0.1 and
a free port (plus a Unix socket in the same directory), stopped and deleted at the end.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the ``postgres``
user Debian's package creates (``runuser -u postgres``); otherwise as the current user. Binaries are
looked up on PATH and in Debian's ``/usr/lib/postgresql/<version>/bin``; a missing server skips the
test locally and fails it under ``CI=true`` (``tests.support.require_binary``).

Fixtures (import them explicitly in a test module)::

    from tests.support.postgres_node import postgres, pg_url  # noqa: F401

``postgres`` is one server per test session; ``pg_url`` a fresh, empty database on it per test
(``postgresql://dacp@127.0.0.1:PORT/t_<random>``).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.support import free_port, require_binary

SUPERUSER = "dacp"
START_TIMEOUT_S = 30.0


def _candidates(name: str) -> list[Path]:
    base = Path("/usr/lib/postgresql")
    versions = sorted(base.iterdir(), key=lambda p: p.name, reverse=True) if base.is_dir() else []
    return [v / "bin" / name for v in versions]


def _runner() -> list[str]:
    """The command prefix that runs the server as a non-root user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root, but there is no 'postgres' user to run the test server as "
                    "(apt-get install postgresql creates it)")
    return [require_binary("runuser"), "-u", "postgres", "--"]


@dataclass
class PostgresServer:
    root: Path
    port: int
    pg_ctl: str
    runner: list[str]

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run([*self.runner, self.pg_ctl, "stop", "-D", str(self.datadir), "-m", "immediate", "-w"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    initdb = require_binary("initdb", *_candidates("initdb"))
    pg_ctl = require_binary("pg_ctl", *_candidates("pg_ctl"))
    runner = _runner()
    root = Path(tempfile.mkdtemp(prefix="dacp-pg-"))
    if runner:
        shutil.chown(root, "postgres", "postgres")
    try:
        subprocess.run([*runner, initdb, "-D", str(root / "data"), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                        "--locale=C", "--no-sync"], check=True, capture_output=True, timeout=120)
        last_error = ""
        for _ in range(3):  # the free port may be taken between probe and bind
            port = free_port()
            opts = (f"-k {root} -h 127.0.0.1 -p {port} -c fsync=off -c full_page_writes=off "
                    "-c max_connections=60 -c shared_buffers=32MB")
            r = subprocess.run([*runner, pg_ctl, "start", "-D", str(root / "data"), "-l", str(root / "server.log"),
                                "-w", "-t", str(int(START_TIMEOUT_S)), "-o", opts],
                               capture_output=True, text=True, timeout=START_TIMEOUT_S + 10)
            if r.returncode == 0:
                break
            last_error = (root / "server.log").read_text(errors="replace")[-2000:] if (root / "server.log").exists() else r.stderr
        else:
            raise RuntimeError(f"PostgreSQL did not start: {last_error}")
        server = PostgresServer(root, port, pg_ctl, runner)
        _wait_ready(server)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(server: PostgresServer) -> None:
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with psycopg.connect(server.url(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    return postgres.create_database()
