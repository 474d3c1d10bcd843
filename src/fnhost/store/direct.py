"""The statements every call makes, on the driver's connection (no ORM, no Core).

A trivial call writes a session (``POST /sessions``), accepts the call (redeem the nonce and
insert the call, one transaction) and records its end (outcome, logs, ``lastCalled``, one
transaction). Profiled in the server, those cost about 4 ms of CPU per call through the ORM,
2 through SQLAlchemy Core, and 0.2 as plain driver statements; this is the one place they
are written out, once for both dialects (``?`` placeholders, turned into ``%s`` for
PostgreSQL's driver). Everything that is not per call stays on the ORM, whose models
(``store/*.py``) remain the schema's one description: these statements name its columns.

Transactions take the same in-process write turn as ``Database.write`` on SQLite, so
writers of this process still queue instead of sleeping in ``busy_timeout``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fnhost.store.db import (
    BUSY_NOW,
    Database,
    WouldWait,
    set_busy_wait,
    storable_values,
    waiting_allowed,
)
from fnhost.store.identity import ROW_ID

# the columns of a function row that change when what a call of it runs changes (its build,
# its code, its current version): a caller may keep the rest of the row while these read the
# same. The version is last: the call is recorded on it.
FUNCTION_STAMP = ("status", "env_hash", "ready_time", "file_id", "function_path", "version")
_READ_FUNCTION = (  # constant column names only
    f"SELECT error, {', '.join(FUNCTION_STAMP)} FROM functions WHERE id = ? AND project = ?"  # noqa: S608
)


@dataclass(frozen=True)
class FunctionStamp:
    """What accepting a call reads of its function: enough to refuse it, or to tell that a
    row read earlier is still the function's."""

    status: str
    error: dict[str, Any] | None
    stamp: tuple[Any, ...]

    @property
    def version(self) -> int:
        return int(self.stamp[-1])


@dataclass(frozen=True)
class AcceptedRow:
    session_id: int
    call_id: int
    start_time: int
    function_version: int


class Direct:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._sqlite = db.is_sqlite
        self._sql: dict[str, str] = {}
        self._data_error: type[Exception] = db.engine.dialect.dbapi.DataError  # type: ignore[union-attr]

    def _q(self, sql: str) -> str:
        """``sql`` in the driver's placeholder style."""
        if self._sqlite:
            return sql
        translated = self._sql.get(sql)
        if translated is None:
            translated = self._sql[sql] = sql.replace("?", "%s")
        return translated

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor in a write transaction (this server's write turn held) that commits when
        the block ends and rolls back if it raises. The connection comes from (and goes back
        to) the engine's pool (``Database.raw``), which checks it and, on SQLite, has set it up
        as every other connection (WAL, foreign keys)."""
        with self.db.write_turn(), storable_values(self._data_error), self.db.raw() as conn:
            cursor = conn.cursor()
            if self._sqlite:  # pysqlite's own transactions are off (see store/db.py)
                self._begin_sqlite(conn, cursor)
            try:
                yield cursor
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

    @staticmethod
    def _begin_sqlite(conn: Any, cursor: Any) -> None:
        # where waiting is not allowed (the event loop: see without_waiting), a write turn
        # that another process holds fails at once instead of after busy_timeout. Set on the
        # connection only when it changes: most writes are made the same way as the last
        # one on the same connection, and the PRAGMA was a third of a write's statements.
        now = not waiting_allowed()
        set_busy_wait(conn.info, cursor.execute, wait=not now)
        try:
            cursor.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if now:
                raise WouldWait(str(exc)) from None
            raise

    @contextmanager
    def _one_read(self) -> Iterator[Any]:
        """A cursor for one SELECT: one statement is a transaction of its own (autocommit),
        so it needs no BEGIN and no COMMIT on SQLite. On a connection left not to wait (see
        ``_begin_sqlite``) it waits again where waiting is allowed; where it is not, a busy
        database (rare for a WAL reader) raises WouldWait, as a write would."""
        with storable_values(self._data_error), self.db.raw() as conn:
            if self._sqlite and waiting_allowed():
                set_busy_wait(conn.info, conn.cursor().execute, wait=True)
            now = self._sqlite and conn.info.get(BUSY_NOW, False)
            try:
                yield conn.cursor()
            except sqlite3.OperationalError as exc:
                if now:
                    raise WouldWait(str(exc)) from None
                raise
            conn.commit()  # ends the transaction PostgreSQL's driver opened for the read

    # -- reads ------------------------------------------------------------------------------------
    def identity_version(self) -> int:
        with self._one_read() as cur:
            cur.execute(self._q("SELECT version FROM identity_version WHERE id = ?"), (ROW_ID,))
            row = cur.fetchone()
        return int(row[0] or 0) if row else 0

    # -- POST /sessions ---------------------------------------------------------------------------
    def insert_session(
        self,
        *,
        project: str,
        kind: str,
        client_id: str | None,
        principal: dict[str, Any],
        nonce_hash: str,
        nonce_expires_time: int,
        parent_session_id: int | None,
        depth: int,
        created_time: int,
        expiration_time: int,
    ) -> int:
        """A READY session waiting for its nonce; its id."""
        with self._transaction() as cur:
            cur.execute(
                self._q(
                    "INSERT INTO sessions (project, type, status, client_id, principal, nonce_hash,"
                    " nonce_expires_time, nonce_used, parent_session_id, depth, created_time, expiration_time)"
                    " VALUES (?, ?, 'READY', ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id"
                ),
                (
                    project, kind, client_id, json.dumps(principal), nonce_hash, nonce_expires_time, False,
                    parent_session_id, depth, created_time, expiration_time,
                ),
            )
            return int(cur.fetchone()[0])

    # -- POST …/call ------------------------------------------------------------------------------
    def accept(
        self,
        *,
        project: str,
        function_id: int,
        nonce_hash: str,
        now: int,
        session_expires: int,
        data: Any,
        owner: str,
        check: Callable[[FunctionStamp | None], None],
    ) -> AcceptedRow | None:
        """One transaction: read the function (``check(FunctionStamp | None)`` may raise to
        refuse the call), redeem the nonce into the call's session, insert the call Running.
        None, with nothing written, if the nonce does not redeem (unknown, used, expired, or
        its session revoked): the caller finds out which on its own path, for its message."""
        try:
            return self._accept(project, function_id, nonce_hash, now, session_expires, data, owner, check)
        except _NotRedeemed:
            return None

    def _accept(
        self, project: str, function_id: int, nonce_hash: str, now: int, session_expires: int, data: Any,
        owner: str, check: Callable[[FunctionStamp | None], None],
    ) -> AcceptedRow:
        with self._transaction() as cur:
            cur.execute(
                self._q(_READ_FUNCTION),
                (function_id, project),
            )
            found = cur.fetchone()
            stamp = None if found is None else _function_stamp(found)
            check(stamp)
            assert stamp is not None  # check refuses a function that is not there
            cur.execute(
                self._q(
                    "UPDATE sessions SET nonce_used = ?, status = 'ACTIVE', expiration_time = ?"
                    " WHERE nonce_hash = ? AND project = ? AND nonce_used = ? AND status = 'READY'"
                    " AND (nonce_expires_time IS NULL OR nonce_expires_time >= ?) RETURNING id"
                ),
                (True, session_expires, nonce_hash, project, False, now),
            )
            session = cur.fetchone()
            if session is None:
                raise _NotRedeemed
            cur.execute(
                self._q(
                    "INSERT INTO calls (project, function_id, status, start_time, session_id, data, owner,"
                    " function_version) VALUES (?, ?, 'Running', ?, ?, ?, ?, ?) RETURNING id"
                ),
                (project, function_id, now, session[0], _json(data), owner, stamp.version),
            )
            call_id = int(cur.fetchone()[0])
        return AcceptedRow(int(session[0]), call_id, now, stamp.version)

    # -- a call's end -----------------------------------------------------------------------------
    def record_end(
        self,
        call_id: int,
        function_id: int,
        *,
        status: str,
        end_time: int,
        run_start_time: int | None,
        error: dict[str, Any] | None,
        response: str | None,
        usage: dict[str, int | None],
        logs: list[tuple[int, str]],
        called_at: int,
    ) -> bool:
        """One transaction: the outcome on the call's row if it is still Running, its log
        lines, the function's ``last_called``. False (nothing written) if it had ended."""
        with self._transaction() as cur:
            cur.execute(
                self._q(
                    "UPDATE calls SET status = ?, end_time = ?, run_start_time = ?, error = ?, response = ?,"
                    " dispatch_time = ?, cpu_user_ms = ?, cpu_system_ms = ?, peak_memory_bytes = ?"
                    " WHERE id = ? AND status = 'Running'"
                ),
                (
                    status, end_time, run_start_time, _json(error), response, usage.get("dispatch_time"),
                    usage.get("cpu_user_ms"), usage.get("cpu_system_ms"), usage.get("peak_memory_bytes"), call_id,
                ),
            )
            if cur.rowcount != 1:
                return False
            if logs:
                cur.executemany(
                    self._q("INSERT INTO call_logs (call_id, seq, timestamp, message) VALUES (?, ?, ?, ?)"),
                    [(call_id, seq, ts, message) for seq, (ts, message) in enumerate(logs)],
                )
            cur.execute(self._q("UPDATE functions SET last_called = ? WHERE id = ?"), (called_at, function_id))
        return True


class _NotRedeemed(Exception):
    """Inside ``accept``: roll the transaction back, the nonce did not redeem."""


def _function_stamp(found: tuple[Any, ...]) -> FunctionStamp:
    error = found[0]
    if isinstance(error, str):  # SQLite keeps JSON as text; psycopg decodes it
        error = json.loads(error)
    return FunctionStamp(status=found[1], error=error, stamp=tuple(found[1:]))


def _json(value: Any) -> str | None:
    """A JSON column's value as the ORM writes it (SQL NULL for None)."""
    return None if value is None else json.dumps(value)
