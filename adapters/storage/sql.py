"""One small database interface over SQLite (embedded default) and PostgreSQL (selected by URL).

Used by the decision log (``rules.audit.log``) and the collateral ledger (``rules.ledger.store``),
which share one database so that a ledger credit and its decision-log entry commit in ONE transaction.

- ``open_database(target)``: a file path or ``sqlite:///path`` gives SQLite (WAL, ``synchronous=FULL``);
  ``postgresql://...`` (or ``postgres://``) gives PostgreSQL through psycopg 3.
- SQL is written once with ``?`` placeholders; the PostgreSQL side rewrites them to ``%s``.
- ``transaction(locks)``: a write transaction. SQLite takes its whole-database write lock up front
  (``BEGIN IMMEDIATE``, retried while busy). PostgreSQL runs READ COMMITTED and takes a transaction-scoped
  advisory lock per name in ``locks`` (sorted, so two writers never wait on each other in a cycle);
  ``lock(name)`` takes one more inside the transaction. Nested ``transaction()`` calls join the outer one,
  so a caller can wrap several writers' work (ledger rows + decision-log entries) in one commit.
- Errors of either driver become ``StorageError`` (exit 5) with the target named (password hidden:
  ``adapters.urls.database``).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, NoReturn, Sequence

from adapters import retry, urls
from rules.errors import InputError, StorageError

BUSY_DEADLINE_S = 120.0
# SQLite's write lock: BEGIN IMMEDIATE again every 10 ms while another writer holds it, for up to 2 minutes
# (each attempt itself waits up to the connection's busy_timeout).
BUSY_RETRY = retry.RetryPolicy(request_timeout_s=BUSY_DEADLINE_S, retries=None, backoff_s=0.01,
                               max_total_s=BUSY_DEADLINE_S, factor=1.0)
PAGE_SIZE = 65536
CACHE_KIB = 8192  # page cache per connection (a chunk of 500 decision-log entries is about 1.3 MB)
_PG = re.compile(r"^postgres(?:ql)?:/+", re.IGNORECASE)


def normalise_target(target: str | Path) -> str:
    """The text of a database target. ``Path("postgresql://h/db")`` collapses ``//`` to ``/``: undo that."""
    text = str(target).strip()
    m = _PG.match(text)
    if m:
        return "postgresql://" + text[m.end():]
    return text


def is_postgres(target: str | Path) -> bool:
    return bool(_PG.match(str(target).strip()))


def lock_key(name: str) -> int:
    """A signed 64-bit advisory lock key for ``name`` (stable across processes and replicas)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


def open_database(target: str | Path, *, timeout_s: float = 60.0) -> "Database":
    text = normalise_target(target)
    if is_postgres(text):
        return PostgresDatabase(text, timeout_s=timeout_s)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///"):]  # sqlite:///var/x.sqlite is relative, sqlite:////srv/x.sqlite absolute
    elif text.startswith("sqlite:"):
        raise InputError("write SQLite URLs as sqlite:///relative/path or sqlite:////absolute/path", text)
    elif "://" in text:
        raise InputError("unknown database URL scheme (use a file path, sqlite:///path or postgresql://...)", text)
    return SqliteDatabase(Path(text), timeout_s=timeout_s)


class Database:
    kind = "?"
    where = "?"

    def __init__(self) -> None:
        self._depth = 0

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    # -- implemented by the backends -------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        raise NotImplementedError

    def _begin(self, locks: Sequence[str]) -> None:
        raise NotImplementedError

    def _commit(self) -> None:  # both backends run their connection in autocommit and use explicit SQL
        self.db.execute("COMMIT")

    def _rollback(self) -> None:
        self.db.execute("ROLLBACK")

    def lock(self, name: str) -> None:
        """Serialise on ``name`` until the end of the current transaction (no-op on SQLite)."""

    def close(self) -> None:
        self.db.close()

    # -- shared ----------------------------------------------------------------------------------
    @contextmanager
    def transaction(self, locks: Sequence[str] = ()) -> Iterator["Database"]:
        if self._depth:
            for name in sorted(set(locks)):
                self.lock(name)
            self._depth += 1
            try:
                yield self
            finally:
                self._depth -= 1
            return
        self._begin(sorted(set(locks)))
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            try:
                self._rollback()
            except Exception:  # the connection may be gone; the server rolls back on its own
                pass
            raise
        self._depth = 0
        try:
            self._commit()
        except Exception as e:
            raise StorageError(f"{self.where}: commit failed: {e}") from None

    def script(self, statements: Sequence[str]) -> None:
        for stmt in statements:
            self.execute(stmt)


class SqliteDatabase(Database):
    kind = "sqlite"

    def __init__(self, path: Path, *, timeout_s: float = 60.0):
        super().__init__()
        self.path = path
        self.where = str(path)
        if path.is_dir():
            raise InputError("is a directory; give the path of the database file", str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite3.connect(str(path), timeout=timeout_s, isolation_level=None, check_same_thread=False)
            # A new database gets large pages: decision-log entries are 2-3 KB, one to a 4 KB page (a
            # third of each page wasted); with 64 KB pages a batch writes a twentieth as many WAL frames.
            # (The page size is fixed once the first table exists; existing databases keep theirs.)
            self.db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            self.db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
        except sqlite3.DatabaseError as e:
            raise StorageError(f"{path}: cannot open the database: {e}") from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.db.execute(sql, tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)

    def _begin(self, locks: Sequence[str]) -> None:
        deadline = time.monotonic() + BUSY_DEADLINE_S

        def give_up(e: Exception, _: retry.Stop) -> NoReturn:
            raise StorageError(f"{self.where}: cannot lock the database: {e}") from None

        retry.call(lambda: self.db.execute("BEGIN IMMEDIATE"), BUSY_RETRY, errors=(sqlite3.OperationalError,),
                   transient=lambda e: "locked" in str(e) or "busy" in str(e), give_up=give_up,
                   remaining=lambda: deadline - time.monotonic())


class PostgresDatabase(Database):
    kind = "postgresql"

    def __init__(self, url: str, *, timeout_s: float = 60.0):
        super().__init__()
        self.url = url
        self.where = urls.database(url)
        try:
            import psycopg
        except ImportError:  # pragma: no cover - a dependency of the package
            raise StorageError("PostgreSQL storage needs psycopg 3: pip install 'psycopg[binary]'") from None
        self._psycopg = psycopg
        try:
            self.db = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(min(timeout_s, 30))))
        except (psycopg.Error, ValueError) as e:
            raise StorageError(f"{self.where}: cannot connect: {_first_line(e)}") from None
        self._timeout_ms = int(timeout_s * 1000)

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            if not params:
                return self.db.execute(sql, prepare=False)  # type: ignore[call-overload]
            return self.db.execute(self._sql(sql), tuple(params), prepare=False)
        except self._psycopg.errors.IntegrityError as e:
            raise sqlite3.IntegrityError(_first_line(e)) from None  # one exception type for both backends
        except self._psycopg.errors.RaiseException as e:
            raise sqlite3.IntegrityError(_first_line(e)) from None
        except self._psycopg.OperationalError as e:
            raise StorageError(f"{self.where}: {_first_line(e)}") from None

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            with self.db.cursor() as cur:
                cur.executemany(self._sql(sql), [tuple(r) for r in rows])
        except self._psycopg.errors.IntegrityError as e:
            raise sqlite3.IntegrityError(_first_line(e)) from None
        except self._psycopg.OperationalError as e:
            raise StorageError(f"{self.where}: {_first_line(e)}") from None

    def lock(self, name: str) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(name),))

    def _begin(self, locks: Sequence[str]) -> None:
        try:
            self.db.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            self.db.execute(f"SET LOCAL lock_timeout = {self._timeout_ms}")
            for name in locks:
                self.db.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(name),))
        except self._psycopg.Error as e:
            try:
                self.db.execute("ROLLBACK")
            except self._psycopg.Error:
                pass
            raise StorageError(f"{self.where}: cannot begin a transaction: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
