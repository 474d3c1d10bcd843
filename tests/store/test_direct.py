"""The call path's raw statements (``store/direct.py``) on SQLite and the real PostgreSQL.

They bypass the ORM, so each one is checked by reading back through the ORM: the two must
agree on every column (JSON as JSON, booleans as booleans), on both backends.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy

from fnhost.clock import now_ms
from fnhost.store import calls, functions, identity, projects, sessions
from fnhost.store.db import Database
from fnhost.store.direct import Direct, FunctionStamp
from fnhost.store.functions import FunctionRow


def _ready_function(database: Database, project: str = "p") -> int:
    with database.write() as s:
        projects.ensure(project, session=s)
        row = functions.add(
            FunctionRow(
                project=project, name="f", file_id=7, function_path="handler.py", cpu=1.0, memory=1.5,
                runtime="py311", status="Ready", env_hash="abc", ready_time=5, version=3, created_time=now_ms(),
            ),
            session=s,
        )
        return row.id


def _session(direct: Direct, nonce_hash: str, *, nonce_expires: int, project: str = "p") -> int:
    return direct.insert_session(
        project=project, kind="CLIENT_CREDENTIALS", client_id="c1",
        principal={"subject": "c1", "groups": [3], "admin": False}, nonce_hash=nonce_hash,
        nonce_expires_time=nonce_expires, parent_session_id=None, depth=0, created_time=1, expiration_time=2,
    )


def _accept(direct: Direct, function_id: int, nonce_hash: str, *, now: int, data: Any = None,
            check: Any = None, project: str = "p") -> Any:
    seen: list[FunctionStamp | None] = []

    def record(found: FunctionStamp | None) -> None:
        seen.append(found)
        if check is not None:
            check(found)

    accepted = direct.accept(
        project=project, function_id=function_id, nonce_hash=nonce_hash, now=now, session_expires=now + 1000,
        data=data, owner="replica-1", check=record,
    )
    return accepted, seen


def test_a_session_reads_back_through_the_orm(database: Database) -> None:
    direct = Direct(database)
    sid = _session(direct, "n1", nonce_expires=10**15)
    with database.read() as s:
        row = sessions.get("p", sid, session=s)
        assert row is not None
        assert (row.status, row.type, row.client_id, row.nonce_used, row.depth) == (
            "READY", "CLIENT_CREDENTIALS", "c1", False, 0)
        assert row.principal == {"subject": "c1", "groups": [3], "admin": False}


def test_accept_redeems_the_nonce_once_and_inserts_the_call(database: Database) -> None:
    direct = Direct(database)
    fid = _ready_function(database)
    sid = _session(direct, "n1", nonce_expires=10**15)
    accepted, seen = _accept(direct, fid, "n1", now=100, data={"x": [1, "two"], "ok": True})
    assert accepted is not None and accepted.session_id == sid and accepted.start_time == 100
    assert seen and seen[0] is not None
    assert seen[0].status == "Ready" and seen[0].error is None
    assert seen[0].stamp == ("Ready", "abc", 5, 7, "handler.py", 3)
    assert accepted.function_version == 3
    with database.read() as s:
        call = calls.get("p", fid, accepted.call_id, session=s)
        assert call is not None
        assert (call.status, call.session_id, call.owner, call.start_time) == ("Running", sid, "replica-1", 100)
        assert call.data == {"x": [1, "two"], "ok": True}
        assert call.function_version == 3, "the call is recorded on the version it was accepted on"
        session_row = sessions.get("p", sid, session=s)
        assert session_row is not None
        assert (session_row.status, session_row.nonce_used, session_row.expiration_time) == ("ACTIVE", True, 1100)

    again, _ = _accept(direct, fid, "n1", now=101)
    assert again is None, "a nonce redeems once"
    with database.read() as s:
        assert len(calls.list_page("p", fid, limit=10, session=s)) == 1


def test_a_call_without_data_stores_null(database: Database) -> None:
    direct = Direct(database)
    fid = _ready_function(database)
    _session(direct, "n1", nonce_expires=10**15)
    accepted, _ = _accept(direct, fid, "n1", now=100, data=None)
    with database.read() as s:
        call = calls.get("p", fid, accepted.call_id, session=s)
        assert call is not None and call.data is None


def test_accept_refuses_expired_unknown_and_foreign_nonces_writing_nothing(database: Database) -> None:
    direct = Direct(database)
    fid = _ready_function(database)
    _session(direct, "old", nonce_expires=50)
    _session(direct, "theirs", nonce_expires=10**15, project="q")
    assert _accept(direct, fid, "old", now=100)[0] is None
    assert _accept(direct, fid, "never-made", now=100)[0] is None
    # a nonce of project q does not redeem for a call in project p
    assert _accept(direct, fid, "theirs", now=100)[0] is None
    with database.read() as s:
        assert calls.list_page("p", fid, limit=10, session=s) == []
        by_nonce = sessions.by_nonce_hash("theirs", session=s)
        assert by_nonce is not None and by_nonce.status == "READY" and by_nonce.nonce_used is False


def test_a_check_that_refuses_rolls_everything_back(database: Database) -> None:
    direct = Direct(database)
    fid = _ready_function(database)
    _session(direct, "n1", nonce_expires=10**15)

    def refuse(found: FunctionStamp | None) -> None:
        raise PermissionError("no")

    with pytest.raises(PermissionError):
        _accept(direct, fid, "n1", now=100, check=refuse)
    with database.read() as s:
        assert calls.list_page("p", fid, limit=10, session=s) == []
        by_nonce = sessions.by_nonce_hash("n1", session=s)
        assert by_nonce is not None and by_nonce.nonce_used is False, "the nonce is still redeemable"
    # the function of another project is not found: the check sees None (and must refuse)
    def refuse_missing(found: FunctionStamp | None) -> None:
        if found is None:
            raise LookupError("no such function")

    seen: list[FunctionStamp | None] = []
    with pytest.raises(LookupError):
        direct.accept(project="q", function_id=fid, nonce_hash="n1", now=100, session_expires=1100, data=None,
                      owner="replica-1", check=lambda found: (seen.append(found), refuse_missing(found))[1])
    assert seen == [None]


def test_record_end_writes_once_with_logs_and_last_called(database: Database) -> None:
    direct = Direct(database)
    fid = _ready_function(database)
    _session(direct, "n1", nonce_expires=10**15)
    accepted, _ = _accept(direct, fid, "n1", now=100)
    usage = {"dispatch_time": 101, "cpu_user_ms": 3, "cpu_system_ms": 1, "peak_memory_bytes": 2**20}
    end = dict(status="Failed", end_time=120, run_start_time=102, error={"message": "boom", "trace": "t"},
               response=None, usage=usage, logs=[(110, "one"), (111, "two ünïcode")], called_at=100)
    assert direct.record_end(accepted.call_id, fid, **end) is True  # type: ignore[arg-type]
    assert direct.record_end(accepted.call_id, fid, **{**end, "status": "Completed"}) is False  # type: ignore[arg-type]
    with database.read() as s:
        call = calls.get("p", fid, accepted.call_id, session=s)
        assert call is not None
        assert (call.status, call.end_time, call.run_start_time, call.dispatch_time) == ("Failed", 120, 102, 101)
        assert call.error == {"message": "boom", "trace": "t"}
        assert (call.cpu_user_ms, call.cpu_system_ms, call.peak_memory_bytes) == (3, 1, 2**20)
        assert [(line.seq, line.timestamp, line.message) for line in calls.logs(accepted.call_id, session=s)] == [
            (0, 110, "one"), (1, 111, "two ünïcode")]
        fn = functions.get("p", fid, session=s)
        assert fn is not None and fn.last_called == 100


def test_identity_version_reads_what_writers_bump(database: Database) -> None:
    direct = Direct(database)
    first = direct.identity_version()
    assert isinstance(first, int)
    with database.write() as s:
        identity.bump(session=s)
    assert direct.identity_version() == first + 1


def test_a_write_that_must_not_wait_leaves_later_ones_free_to_wait(tmp_path: Any) -> None:
    """On the event loop a write may not wait for another process's write lock: busy_timeout
    0 on its connection, which is left so for the next such write (SQLite). The attack: a
    write that may wait (the ORM's, a thread's), or a read, on that same pooled connection
    while another process holds the lock, which must wait for it, not fail "database is
    locked" at once; and the legitimate use beside it: the loop's write still fails at once."""
    import sqlite3
    import threading
    import time

    from fnhost.store.db import WouldWait, without_waiting

    path = tmp_path / "store.db"
    database = Database(f"sqlite:///{path}")
    database.migrate()
    direct = Direct(database)
    fid = _ready_function(database)
    with without_waiting():  # one connection in the pool (one user at a time): now busy 0
        _session(direct, "n0", nonce_expires=10**15)

    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # another process's writer

    def hold_lock_for(seconds: float) -> None:
        other.execute("BEGIN IMMEDIATE")
        threading.Timer(seconds, lambda: other.execute("COMMIT")).start()

    try:
        hold_lock_for(0.5)
        with without_waiting():
            began = time.monotonic()
            with pytest.raises(WouldWait):
                _session(direct, "n1", nonce_expires=10**15)
            assert time.monotonic() - began < 0.4
        began = time.monotonic()
        with database.write() as s:  # the ORM, on the same connection: waits for the lock
            identity.bump(session=s)
        assert time.monotonic() - began >= 0.3

        with without_waiting():
            _session(direct, "n2", nonce_expires=10**15)  # busy 0 again
        hold_lock_for(0.5)
        began = time.monotonic()
        _session(direct, "n3", nonce_expires=10**15)  # a thread's write: waits
        assert time.monotonic() - began >= 0.3

        with without_waiting():
            _session(direct, "n4", nonce_expires=10**15)
        hold_lock_for(0.5)
        assert direct.identity_version() >= 1  # a WAL reader is not held up by a writer
        with database.read() as s:
            assert functions.get("p", fid, session=s) is not None
    finally:
        time.sleep(0.6)
        other.close()
        database.dispose()


def test_sqlite_hands_the_call_path_the_connection_it_used_last(tmp_path: Any) -> None:
    """An SQLite connection drops its page cache when another has written since it last
    read: back-to-back transactions get the connection used last (a LIFO pool), so each
    starts with the cache the previous one left, even after the pool has grown."""
    db = Database(f"sqlite:///{tmp_path / 'lifo.db'}")
    try:
        db.migrate()
        with db.engine.connect() as first, db.engine.connect() as second:  # two in the pool
            used = [first.connection.dbapi_connection, second.connection.dbapi_connection]
        # ``first`` went back last (a with statement closes its last context first)
        for _ in range(3):
            with db.write() as s:
                s.execute(sqlalchemy.text("SELECT 1"))
                assert s.connection().connection.dbapi_connection is used[0], "not the connection used last"
    finally:
        db.dispose()


def test_the_event_loop_keeps_one_connection_and_a_block_that_failed_gives_it_back(tmp_path: Any) -> None:
    """On SQLite the thread running the event loop keeps the connection of its last block
    (``Database.raw``): no checkout and checkin of the pool per statement. The attack: a
    block that raises inside a transaction it opened must not hand its next block (the next
    call's) a connection still in that transaction; it goes back to the pool, reset, and
    so does the kept one when the engine is disposed. A thread without a loop keeps none."""
    import asyncio
    import threading

    db = Database(f"sqlite:///{tmp_path / 'held.db'}")
    db.migrate()
    direct = Direct(db)
    pool = db.engine.pool

    async def on_the_loop() -> None:
        assert direct.identity_version() == direct.identity_version()
        assert pool.checkedout() == 1  # type: ignore[attr-defined]
        with db.raw() as kept:
            with db.raw() as nested:  # a block inside another: a pooled one of its own
                assert nested is not kept and pool.checkedout() == 2  # type: ignore[attr-defined]
            assert pool.checkedout() == 1  # type: ignore[attr-defined]
        with pytest.raises(RuntimeError), db.raw() as conn:
            conn.cursor().execute("BEGIN IMMEDIATE")
            raise RuntimeError("the block failed inside its transaction")
        assert pool.checkedout() == 0  # type: ignore[attr-defined]
        with db.raw() as conn:
            assert not conn.in_transaction, "the next block got the failed block's transaction"
            conn.cursor().execute("BEGIN IMMEDIATE")  # the write lock is free: nobody holds it
            conn.cursor().execute("COMMIT")
        _session(direct, "n1", nonce_expires=10**15)  # a write on the kept connection
        assert pool.checkedout() == 1  # type: ignore[attr-defined]

    try:
        asyncio.run(on_the_loop())
        seen: list[int] = []
        thread = threading.Thread(target=lambda: (direct.identity_version(), seen.append(pool.checkedout())))
        thread.start()
        thread.join()
        assert seen == [1], "a thread without an event loop kept a connection"  # only the loop's
        db.dispose()
        assert pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        db.dispose()
