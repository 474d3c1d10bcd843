"""Function versions in the store, identical on SQLite and PostgreSQL: new versions claimed
for a build by one builder at a time (version 1 never: it is built as its function), a
switch that copies a version into its function's row, the version's view of the function."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fnhost.clock import now_ms
from fnhost.store import calls, functions, projects, versions
from fnhost.store.db import Database
from fnhost.store.functions import FunctionRow
from fnhost.store.versions import FunctionVersionRow


def _function(session: Session) -> FunctionRow:
    projects.ensure("p", session=session)
    row = functions.add(
        FunctionRow(project="p", name="f", file_id=1, cpu=1.0, memory=1.5, runtime="py311", status="Ready",
                    created_time=now_ms(), secret_names=["k"], env_hash="e1", ready_time=5),
        session=session,
    )
    versions.add(versions.first_of(row, "a" * 64, "me"), session=session)
    return row


def _version(function: FunctionRow, number: int, **kw: object) -> FunctionVersionRow:
    values: dict[str, object] = dict(
        function_id=function.id, project="p", number=number, file_id=10 + number, function_path="handler.py",
        cpu=1.0, memory=1.5, runtime="py311", status="Queued", created_time=now_ms(),
    )
    values.update(kw)
    return FunctionVersionRow(**values)


def test_version_numbers_are_unique_per_function(database: Database) -> None:
    with database.write() as s:
        fn = _function(s)
    with pytest.raises(IntegrityError), database.write() as s:
        versions.add(_version(fn, 1), session=s)


def test_new_version_builds_are_claimed_once_and_version_1_never(database: Database) -> None:
    with database.write() as s:
        fn = _function(s)
        first = versions.get(fn.id, 1, session=s)
        assert first is not None
        first.status = "Queued"  # as while its function builds
        for n in range(2, 8):
            versions.add(_version(fn, n), session=s)
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            with database.write() as s:
                row = versions.claim_next_build(name, now_ms(), 60_000, session=s)
                if row is None:
                    return
                with lock:
                    claimed.append(row.number)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == [2, 3, 4, 5, 6, 7]


def test_an_expired_version_lease_is_claimed_again(database: Database) -> None:
    with database.write() as s:
        fn = _function(s)
        versions.add(_version(fn, 2), session=s)
        assert versions.claim_next_build("a", 1_000, 10, session=s) is not None
    with database.write() as s:
        assert versions.claim_next_build("b", 1_005, 10, session=s) is None
    with database.write() as s:
        row = versions.claim_next_build("b", 2_000, 10, session=s)
        assert row is not None and row.number == 2 and row.build_owner == "b"


def test_make_current_copies_the_version_and_function_at_keeps_the_identity(database: Database) -> None:
    with database.write() as s:
        fn = _function(s)
        v2 = versions.add(_version(fn, 2, status="Ready", env_hash="e2", ready_time=9, env_vars={"A": "b"},
                                   cpu=2.0), session=s)
        fn.version_error = {"version": 3, "message": "no"}
        versions.make_current(fn, v2)
    with database.read() as s:
        row = functions.get_any(fn.id, session=s)
        assert row is not None
        assert (row.version, row.file_id, row.env_hash, row.ready_time, row.env_vars, row.cpu) == (
            2, 12, "e2", 9, {"A": "b"}, 2.0
        )
        assert row.version_error is None and row.status == "Ready"
        v1 = versions.get(fn.id, 1, session=s)
        assert v1 is not None
        at = versions.function_at(row, v1)
    assert (at.id, at.version, at.file_id, at.env_hash, at.secret_names) == (fn.id, 1, 1, v1.env_hash, ["k"])
    assert (at.env_hash, at.status) == (None, "Ready")  # version 1 as written at create: built since
    with database.read() as s:
        assert [v.number for v in versions.of_function(fn.id, session=s)] == [2, 1]


def test_running_calls_are_counted_per_version(database: Database) -> None:
    with database.write() as s:
        fn = _function(s)
        for version, status in ((1, "Running"), (1, "Completed"), (2, "Running"), (2, "Running")):
            calls.insert_call({"project": "p", "function_id": fn.id, "status": status, "start_time": 1,
                               "function_version": version}, session=s)
    with database.read() as s:
        assert versions.running_calls(fn.id, 1, session=s) == 1
        assert versions.running_calls(fn.id, 2, session=s) == 2
        assert versions.running_calls(fn.id, 3, session=s) == 0


def test_deleting_a_function_deletes_its_versions(database: Database) -> None:
    with database.write() as s:
        fn = _function(s)
        versions.add(_version(fn, 2), session=s)
    with database.write() as s:
        row = functions.get_any(fn.id, session=s)
        s.delete(row)
    with database.read() as s:
        assert versions.of_function(fn.id, session=s) == []
