"""The store's behaviour, identical on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import IntegrityError

from fnhost.clock import now_ms
from fnhost.store import calls, clients, files, functions, projects, sessions
from fnhost.store.calls import CallRow
from fnhost.store.clients import ClientRow
from fnhost.store.db import Database
from fnhost.store.files import FileRow
from fnhost.store.functions import FunctionRow
from fnhost.store.sessions import SessionRow


def _function(project: str = "p", **kw: object) -> FunctionRow:
    values: dict[str, object] = dict(
        project=project, name="f", file_id=1, cpu=1.0, memory=1.5, runtime="py311", status="Queued",
        created_time=now_ms(),
    )
    values.update(kw)
    return FunctionRow(**values)


def test_migrations_are_idempotent(database: Database) -> None:
    database.migrate()
    with database.write() as s:
        projects.ensure("p", session=s)
        projects.ensure("p", session=s)
    with database.read() as s:
        assert [p.name for p in projects.list_all(session=s)] == ["p"]


def test_write_rolls_back_on_error(database: Database) -> None:
    with pytest.raises(RuntimeError), database.write() as s:
        projects.ensure("gone", session=s)
        raise RuntimeError("boom")
    with database.read() as s:
        assert projects.get("gone", session=s) is None


def test_client_ids_are_unique(database: Database) -> None:
    row = dict(client_id="c1", name="n", secret_hash="h", is_admin=False, created_time=1)
    with database.write() as s:
        clients.add(ClientRow(**row), session=s)
    with pytest.raises(IntegrityError), database.write() as s:
        clients.add(ClientRow(**row), session=s)
    with database.read() as s:
        found = clients.by_client_id("c1", session=s)
        assert found is not None and found.name == "n"


def test_files_external_id_prefix_is_literal(database: Database) -> None:
    with database.write() as s:
        for xid in ["a%b", "a_c", "axd", "b"]:
            files.add(FileRow(project="p", external_id=xid, name=xid, created_time=1, last_updated_time=1), session=s)
        files.add(FileRow(project="other", external_id="a%z", name="z", created_time=1, last_updated_time=1), session=s)
    with database.read() as s:
        assert [f.external_id for f in files.list_page("p", session=s, limit=10, external_id_prefix="a%")] == ["a%b"]
        assert [f.external_id for f in files.list_page("p", session=s, limit=10, external_id_prefix="a_")] == ["a_c"]
        page1 = files.list_page("p", session=s, limit=2)
        page2 = files.list_page("p", session=s, limit=2, after_id=page1[-1].id)
        assert [f.external_id for f in page1 + page2] == ["a%b", "a_c", "axd", "b"]
        assert files.by_external_id("p", "a%z", session=s) is None


def test_functions_external_id_unique_per_project(database: Database) -> None:
    with database.write() as s:
        projects.ensure("p", session=s)
        projects.ensure("q", session=s)
        functions.add(_function("p", external_id="x"), session=s)
        functions.add(_function("q", external_id="x"), session=s)
    with pytest.raises(IntegrityError), database.write() as s:
        functions.add(_function("p", external_id="x"), session=s)


def test_build_claims_are_exclusive(database: Database) -> None:
    with database.write() as s:
        projects.ensure("p", session=s)
        for _ in range(6):
            functions.add(_function(), session=s)
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while True:
            with database.write() as s:
                row = functions.claim_next_build(name, now_ms(), 60_000, session=s)
                if row is None:
                    return
                with lock:
                    claimed.append(row.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 6


def test_expired_build_lease_is_reclaimed(database: Database) -> None:
    with database.write() as s:
        projects.ensure("p", session=s)
        fid = functions.add(_function(), session=s).id
        assert functions.claim_next_build("a", 1_000, 10, session=s) is not None
    with database.write() as s:
        assert functions.claim_next_build("b", 1_005, 10, session=s) is None
    with database.write() as s:
        row = functions.claim_next_build("b", 2_000, 10, session=s)
        assert row is not None and row.id == fid and row.build_owner == "b"


def test_calls_list_newest_first_with_filters_and_logs(database: Database) -> None:
    with database.write() as s:
        projects.ensure("p", session=s)
        fid = functions.add(_function(), session=s).id
        ids = []
        for i, status in enumerate(["Completed", "Failed", "Completed", "Running"]):
            ids.append(
                calls.add(
                    CallRow(project="p", function_id=fid, status=status, start_time=100 + i, end_time=200 + i),
                    session=s,
                ).id
            )
        calls.add_logs(ids[0], 0, [(1, "one"), (2, "two")], session=s)
        calls.add_logs(ids[0], 2, [(3, "three")], session=s)
    with database.read() as s:
        assert [c.id for c in calls.list_page("p", fid, session=s, limit=10)] == ids[::-1]
        assert [c.id for c in calls.list_page("p", fid, session=s, limit=10, status="Completed")] == [ids[2], ids[0]]
        assert [c.id for c in calls.list_page("p", fid, session=s, limit=2, before_id=ids[2])] == [ids[1], ids[0]]
        assert [c.id for c in calls.list_page("p", fid, session=s, limit=10, start_min=102)] == [ids[3], ids[2]]
        assert [r.message for r in calls.logs(ids[0], session=s)] == ["one", "two", "three"]
        assert [r.message for r in calls.logs(ids[0], session=s, after_seq=1)] == ["three"]
        assert calls.get("other", fid, ids[0], session=s) is None
    with database.write() as s:
        calls.delete_for_function(fid, session=s)
    with database.read() as s:
        assert calls.list_page("p", fid, session=s, limit=10) == []
        assert calls.logs(ids[0], session=s) == []


def test_sessions_by_nonce_hash(database: Database) -> None:
    with database.write() as s:
        row = sessions.add(
            SessionRow(
                project="p", type="CLIENT_CREDENTIALS", status="READY", principal={"subject": "x"},
                nonce_hash="h1", created_time=1, expiration_time=2,
            ),
            session=s,
        )
    with database.read() as s:
        found = sessions.by_nonce_hash("h1", session=s)
        assert found is not None and found.id == row.id and found.principal == {"subject": "x"}
        assert sessions.by_nonce_hash("h2", session=s) is None
        assert sessions.get("other", row.id, session=s) is None
