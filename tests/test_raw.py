"""The RAW API through the official SDK: databases, tables, rows, cursors, bad input."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx
import pytest
from cognite.client import CogniteClient
from cognite.client.data_classes import Row, RowWrite
from cognite.client.exceptions import CogniteAPIError, CogniteDuplicatedError, CogniteNotFoundError

from tests.live import LiveServer, bearer_token


def _db() -> str:
    return f"db-{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def http(server: LiveServer, admin_creds: dict[str, Any]) -> httpx.Client:
    base = f"{server.base_url}/api/v1/projects/{admin_creds['project']}"
    with httpx.Client(
        base_url=base, headers={"Authorization": f"Bearer {bearer_token(admin_creds)}"}, timeout=30
    ) as c:
        yield c


def test_databases_and_tables(client: CogniteClient) -> None:
    db = _db()
    created = client.raw.databases.create(db)
    assert created.name == db
    assert db in [d.name for d in client.raw.databases.list(limit=-1)]
    tables = client.raw.tables.create(db, ["t1", "t2", "with/slash and space"])
    assert sorted(t.name for t in tables) == ["t1", "t2", "with/slash and space"]
    assert sorted(t.name for t in client.raw.tables.list(db, limit=-1)) == [
        "t1",
        "t2",
        "with/slash and space",
    ]
    assert len(client.raw.tables.list(db, limit=2)) == 2
    client.raw.tables.delete(db, "t2")
    assert sorted(t.name for t in client.raw.tables.list(db, limit=-1)) == [
        "t1",
        "with/slash and space",
    ]
    with pytest.raises(CogniteDuplicatedError):
        client.raw.databases.create(db)
    with pytest.raises(CogniteDuplicatedError):
        client.raw.tables.create(db, "t1")
    with pytest.raises(CogniteAPIError) as err:
        client.raw.databases.delete(db)
    assert "recursive" in err.value.message
    client.raw.databases.delete(db, recursive=True)
    assert db not in [d.name for d in client.raw.databases.list(limit=-1)]
    with pytest.raises(CogniteAPIError):
        client.raw.databases.delete(db)


def test_database_list_pages(client: CogniteClient, http: httpx.Client) -> None:
    prefix = f"pg{secrets.token_hex(3)}"
    client.raw.databases.create([f"{prefix}-{i}" for i in range(7)])
    names: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        res = http.get("/raw/dbs", params=params)
        assert res.status_code == 200, res.text
        names += [d["name"] for d in res.json()["items"]]
        pages += 1
        cursor = res.json().get("nextCursor")
        if not cursor:
            break
    assert pages >= 3
    assert [n for n in names if n.startswith(prefix)] == [f"{prefix}-{i}" for i in range(7)]
    client.raw.databases.delete([f"{prefix}-{i}" for i in range(7)])


def test_rows_insert_list_retrieve_delete(client: CogniteClient) -> None:
    db = _db()
    with pytest.raises(CogniteAPIError) as err:
        client.raw.rows.insert(db, "state", {"k": {"a": 1}})
    assert err.value.code == 404
    client.raw.rows.insert(
        db,
        "state",
        {"k1": {"a": 1, "b": "x"}, "k/2": {"a": 2, "nested": {"l": [1, 2]}}},
        ensure_parent=True,
    )
    assert [t.name for t in client.raw.tables.list(db)] == ["state"]
    row = client.raw.rows.retrieve(db, "state", "k/2")
    assert (
        isinstance(row, Row)
        and row.columns == {"a": 2, "nested": {"l": [1, 2]}}
        and row.last_updated_time
    )
    assert client.raw.rows.retrieve(db, "state", "missing") is None
    # insert replaces the whole row
    client.raw.rows.insert(db, "state", [RowWrite(key="k1", columns={"c": True})])
    assert client.raw.rows.retrieve(db, "state", "k1").columns == {"c": True}
    rows = client.raw.rows.list(db, "state", limit=10)
    assert sorted(r.key for r in rows) == ["k/2", "k1"]
    only_a = client.raw.rows.list(db, "state", columns=["a"], limit=10)
    assert {r.key: r.columns for r in only_a} == {"k/2": {"a": 2}, "k1": {}}
    keys_only = client.raw.rows.list(db, "state", columns=[], limit=10)
    assert all(r.columns == {} for r in keys_only) and len(keys_only) == 2
    client.raw.rows.delete(db, "state", ["k1", "never-existed"])
    assert [r.key for r in client.raw.rows.list(db, "state", limit=-1)] == ["k/2"]
    client.raw.databases.delete(db, recursive=True)


def test_time_filters(client: CogniteClient) -> None:
    db = _db()
    client.raw.rows.insert(db, "t", {"old": {"v": 1}}, ensure_parent=True)
    old = client.raw.rows.retrieve(db, "t", "old").last_updated_time
    time.sleep(0.01)
    client.raw.rows.insert(db, "t", {"new": {"v": 2}})
    new = client.raw.rows.retrieve(db, "t", "new").last_updated_time
    assert new > old
    assert [r.key for r in client.raw.rows.list(db, "t", min_last_updated_time=old, limit=10)] == [
        "new"
    ]
    assert [r.key for r in client.raw.rows.list(db, "t", max_last_updated_time=old, limit=10)] == [
        "old"
    ]
    assert [r.key for r in client.raw.rows.list(db, "t", min_last_updated_time=old, limit=-1)] == [
        "new"
    ]
    client.raw.databases.delete(db, recursive=True)


def test_unlimited_list_uses_parallel_cursors(client: CogniteClient, http: httpx.Client) -> None:
    db = _db()
    n = 12_345  # more than one insert chunk (5000) and one read page (10000)
    client.raw.rows.insert(
        db, "big", {f"key-{i:05d}": {"i": i} for i in range(n)}, ensure_parent=True
    )
    rows = client.raw.rows.list(db, "big", limit=-1)
    keys = [r.key for r in rows]
    assert len(keys) == n and set(keys) == {f"key-{i:05d}" for i in range(n)}
    assert all(r.columns["i"] == int(r.key[4:]) for r in rows)
    res = http.get(f"/raw/dbs/{db}/tables/big/cursors", params={"numberOfCursors": 4})
    cursors = res.json()["items"]
    assert len(cursors) == 4
    seen: list[str] = []
    for cursor in cursors:  # every cursor reads its own range, together all rows once
        while cursor:
            page = http.get(
                f"/raw/dbs/{db}/tables/big/rows", params={"cursor": cursor, "limit": 2000}
            ).json()
            seen += [r["key"] for r in page["items"]]
            cursor = page.get("nextCursor")
    assert sorted(seen) == sorted(keys)
    # serial pages with a finite limit above one page
    assert len(client.raw.rows.list(db, "big", limit=10_500)) == 10_500
    client.raw.databases.delete(db, recursive=True)


def test_bad_input(client: CogniteClient, http: httpx.Client) -> None:
    db = _db()
    with pytest.raises(CogniteAPIError) as err:
        client.raw.databases.create("x" * 33)
    assert err.value.code == 400 and "32" in err.value.message
    with pytest.raises(CogniteAPIError):
        client.raw.databases.create("")
    client.raw.databases.create(db)
    res = http.post(
        f"/raw/dbs/{db}/tables/t/rows",
        params={"ensureParent": "true"},
        json={"items": [{"key": "a", "columns": {}}, {"key": "a", "columns": {}}]},
    )
    assert res.status_code == 409 and res.json()["error"]["duplicated"] == [{"key": "a"}]
    res = http.post(
        f"/raw/dbs/{db}/tables/t/rows",
        params={"ensureParent": "true"},
        json={"items": [{"key": "ok", "columns": {}}, {"key": "", "columns": {}}]},
    )
    assert res.status_code == 400 and "key" in res.json()["error"]["message"]
    res = http.post(
        f"/raw/dbs/{db}/tables/t/rows",
        params={"ensureParent": "true"},
        json={"items": [{"key": "ok", "columns": [1]}]},
    )
    assert res.status_code == 400 and "columns" in res.json()["error"]["message"]
    res = http.post(
        f"/raw/dbs/{db}/tables/t/rows",
        params={"ensureParent": "true"},
        json={"items": [{"key": f"k{i}", "columns": {}} for i in range(10_001)]},
    )
    assert res.status_code == 400 and "10000" in res.json()["error"]["message"]
    # nothing above was written, not even the table that ensureParent would have made
    assert client.raw.tables.list(db) == []
    res = http.get(f"/raw/dbs/{db}/tables/none/rows", params={"cursor": "%%%"})
    assert res.status_code in (400, 404)
    client.raw.rows.insert(db, "t", {"a": {}}, ensure_parent=True)
    res = http.get(f"/raw/dbs/{db}/tables/t/rows", params={"cursor": "garbage!"})
    assert res.status_code == 400 and "cursor" in res.json()["error"]["message"]
    with pytest.raises(CogniteNotFoundError):
        client.raw.tables.delete(db, "no-such-table")
    client.raw.databases.delete(db, recursive=True)


def test_raw_needs_capabilities(server: LiveServer, client: CogniteClient) -> None:
    db = _db()
    client.raw.rows.insert(db, "t", {"a": {"v": 1}}, ensure_parent=True)
    reader = server.client(server.create_client("raw-reader", "--capability", "rawAcl:READ"))
    assert reader.raw.rows.retrieve(db, "t", "a").columns == {"v": 1}
    assert db in [d.name for d in reader.raw.databases.list(limit=-1)]
    with pytest.raises(CogniteAPIError) as err:
        reader.raw.rows.insert(db, "t", {"b": {}})
    assert err.value.code == 403 and "rawAcl:WRITE" in err.value.message
    lister = server.client(server.create_client("raw-lister", "--capability", "rawAcl:LIST"))
    assert db in [d.name for d in lister.raw.databases.list(limit=-1)]
    with pytest.raises(CogniteAPIError) as err:
        lister.raw.rows.list(db, "t")
    assert err.value.code == 403
    client.raw.databases.delete(db, recursive=True)
