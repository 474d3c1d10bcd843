"""Engine, sessions and migrations; per-dialect settings live here and nowhere else."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker

from fnhost.errors import InvalidRequest

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# how long an SQLite writer waits for another process's write to end
BUSY_TIMEOUT_MS = 30_000
# in a pooled SQLite connection's ``info``: True while its busy_timeout is 0 (store/direct.py
# leaves it so after a write on the event loop); whoever may wait sets it back first
BUSY_NOW = "fnhost_busy_timeout_0"


def set_busy_wait(info: dict[Any, Any], execute: Callable[[str], Any], *, wait: bool) -> None:
    """Make an SQLite connection wait ``BUSY_TIMEOUT_MS`` for another process's lock, or
    fail at once (``wait=False``), with a PRAGMA only if that is not what it does already.
    ``info``: the pooled connection's ``info``; ``execute``: runs a statement on it."""
    if info.get(BUSY_NOW, False) == wait:
        execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS if wait else 0}")
        info[BUSY_NOW] = not wait


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling is switched off so that we can say BEGIN
    # IMMEDIATE for writers: a deferred transaction that later writes can fail with
    # "database is locked" instead of waiting on busy_timeout.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        set_busy_wait(conn.info, conn.exec_driver_sql, wait=True)
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


@contextmanager
def storable_values(driver_data_error: type[Exception] = DataError) -> Iterator[None]:
    """A value from a request that the database cannot hold is the request's fault (400).

    An id past 64 bits, say: SQLite's driver raises OverflowError as it binds it,
    PostgreSQL a DataError (numeric out of range, a NUL in a string): SQLAlchemy's, or the
    driver's own (``driver_data_error``) where statements go to the driver directly.
    """
    try:
        yield
    except OverflowError:
        raise InvalidRequest(
            "A number in the request is out of range: ids and other integers the server "
            f"stores must be between {-(2**63)} and {2**63 - 1}."
        ) from None
    except (DataError, driver_data_error) as exc:
        detail = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
        raise InvalidRequest(f"The request holds a value the database cannot store: {detail}") from None


class WouldWait(Exception):
    """Inside ``without_waiting``: this write would have to wait for another writer."""


_without_waiting: ContextVar[bool] = ContextVar("fnhost_db_without_waiting", default=False)


@contextmanager
def without_waiting() -> Iterator[None]:
    """Inside, a write that cannot start at once raises ``WouldWait`` instead of waiting,
    and ORM writes (``Database.write``) raise it always: for work on the event loop, which
    must not block, and which then goes to a worker thread instead (``api/deps.py``)."""
    token = _without_waiting.set(True)
    try:
        yield
    finally:
        _without_waiting.reset(token)


def waiting_allowed() -> bool:
    return not _without_waiting.get()


class Database:
    """One engine and its session factories. Made by ``create_app``, never at import."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._writer: Engine
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # LIFO: the connection used last is used next. An SQLite connection drops its
            # whole page cache when it finds that another connection has written since it
            # last read, so handing the call path's back-to-back transactions the same
            # connection keeps its cache (a FIFO queue rotated them over every connection)
            self.engine = create_engine(url, pool_size=16, max_overflow=32, pool_use_lifo=True)
            _configure_sqlite(self.engine)
            self._writer = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        else:
            self.engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
            self._writer = self.engine
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)
        # SQLite takes one writer at a time, and a writer that finds the lock taken sleeps in
        # growing steps (busy_timeout) rather than being woken when it is free, which showed
        # as long tails under concurrent calls. Writers of this process queue on a lock of
        # ours instead, which hands over at once; busy_timeout is left for other processes
        # on the same file. Reentrant, so that a write opened inside another on the same
        # thread fails in SQLite as before instead of hanging here.
        self._write_turn: AbstractContextManager[Any] = (
            threading.RLock() if self.is_sqlite else nullcontext()
        )
        # (thread id, connection) that the thread running the server's event loop keeps
        # checked out between blocks of ``raw``: see there
        self._held: tuple[int, Any] | None = None
        self._held_in_use = False

    @property
    def quick(self) -> bool:
        """Whether a statement costs so little that the event loop may run it: an SQLite
        file, whose statements take microseconds and whose writers this process orders
        (``write_turn``); not a server across the network."""
        return self.is_sqlite

    @contextmanager
    def write_turn(self) -> Iterator[None]:
        """This process's turn to write (SQLite; a no-op elsewhere), for writers that do not
        go through ``write`` (``store/direct.py``). Inside ``without_waiting`` it is taken
        only if it is free."""
        if _without_waiting.get():
            turn = self._write_turn
            if isinstance(turn, nullcontext):
                raise WouldWait("a database across the network")
            if not turn.acquire(blocking=False):  # type: ignore[attr-defined]
                raise WouldWait("another writer has the turn")
            try:
                yield
            finally:
                turn.release()  # type: ignore[attr-defined]
        else:
            with self._write_turn:
                yield

    @contextmanager
    def raw(self) -> Iterator[Any]:
        """A driver connection from the pool for one block of ``store/direct.py``'s statements.

        On SQLite, the thread that runs the server's event loop (where a call's statements
        run: ``api/deps.py``'s ``quickly``) keeps one checked out from block to block: the
        pool's checkout and checkin (its wrapper, its events, the rollback that resets a
        returned connection) cost more than a read's statement, and a call made five of
        them. The connection goes back to the pool, reset, after a block that raised, and
        when the engine is disposed; a block inside another gets a pooled one of its own."""
        held = self._held
        if held is not None and held[0] == threading.get_ident() and not self._held_in_use:
            conn, kept = held[1], True
        else:
            conn, kept = self.engine.raw_connection(), False
            if held is None and self.is_sqlite and _on_event_loop():
                self._held, kept = (threading.get_ident(), conn), True
        if not kept:
            try:
                yield conn
            finally:
                conn.close()
            return
        self._held_in_use = True
        try:
            yield conn
        except BaseException:
            self._held = None
            conn.close()
            raise
        finally:
            self._held_in_use = False

    @contextmanager
    def read(self) -> Iterator[Session]:
        with storable_values(), self._read_sessions() as session, session.begin():
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any exception."""
        if _without_waiting.get():
            raise WouldWait("an ORM write")
        with self._write_turn, storable_values(), self._write_sessions() as session, session.begin():
            yield session

    def migrate(self, *, default_project: str | None = None, target: str = "head") -> None:
        """Bring the schema up to date (or to revision ``target``, for tests of a migration).
        Data migrations that need the server's default project (0003: the admin group) are
        given ``default_project``."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["default_project"] = default_project
        # the writer engine: on SQLite a migration starts BEGIN IMMEDIATE, so servers starting
        # together wait for each other (busy_timeout) instead of failing "database is locked"
        cfg.attributes["engine"] = self._writer
        command.upgrade(cfg, target)

    def revision(self) -> str | None:
        """The schema's Alembic revision (None before the first migration)."""
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def dispose(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held[1].close()
        self.engine.dispose()


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
