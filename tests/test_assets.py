"""The assets API through the official SDK: batches, filters, pagination, updates, hierarchy.

Each test uses its own externalId prefix: the server is shared by the whole session.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest
from cognite.client import CogniteClient
from cognite.client.data_classes import AssetUpdate, AssetWrite, TimestampRange
from cognite.client.exceptions import (
    CogniteAPIError,
    CogniteDuplicatedError,
    CogniteNotFoundError,
)

from tests.live import LiveServer, bearer_token


def _prefix() -> str:
    return f"t{secrets.token_hex(4)}-"


class Http:
    """Raw HTTP for what the SDK hides (page sizes, exact error bodies)."""

    def __init__(self, server: LiveServer, creds: dict[str, Any]) -> None:
        self.base = f"{server.base_url}/api/v1/projects/{creds['project']}"
        self.headers = {"Authorization": f"Bearer {bearer_token(creds)}"}

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(self.base + path, json=body, headers=self.headers, timeout=30)


@pytest.fixture(scope="module")
def http(server: LiveServer, admin_creds: dict[str, Any]) -> Http:
    return Http(server, admin_creds)


def _count(client: CogniteClient, p: str) -> int:
    return client.assets.aggregate_count(filter={"external_id_prefix": p})


def test_seed_example_shape_and_retrieve(client: CogniteClient) -> None:
    p = _prefix()
    created = client.assets.create(
        AssetWrite(external_id=p + "a", name="pump", metadata={"k": "v"})
    )
    assert created.id and created.root_id == created.id and created.name == "pump"
    assert created.created_time and created.last_updated_time
    assets = client.assets.list(external_id_prefix=p)
    assert [a.name for a in assets] == ["pump"]
    assert client.assets.retrieve(id=created.id).external_id == p + "a"
    assert client.assets.retrieve(external_id=p + "a").metadata == {"k": "v"}
    assert client.assets.retrieve(id=987654321987) is None
    assert client.assets.retrieve(external_id=p + "nope") is None


def test_byids_missing_and_ignore_unknown(client: CogniteClient) -> None:
    p = _prefix()
    a = client.assets.create(AssetWrite(external_id=p + "a", name="a"))
    with pytest.raises(CogniteNotFoundError) as err:
        client.assets.retrieve_multiple(ids=[a.id, 987654321987], external_ids=[p + "x"])
    assert {"id": 987654321987} in err.value.not_found and {
        "externalId": p + "x"
    } in err.value.not_found
    got = client.assets.retrieve_multiple(ids=[a.id, 987654321987], ignore_unknown_ids=True)
    assert [x.id for x in got] == [a.id]


def test_hierarchy_parent_external_id_in_same_batch(client: CogniteClient) -> None:
    p = _prefix()
    # children listed before their parent: the server orders the inserts itself
    batch = [
        AssetWrite(external_id=p + "leaf", name="leaf", parent_external_id=p + "mid"),
        AssetWrite(external_id=p + "mid", name="mid", parent_external_id=p + "root"),
        AssetWrite(external_id=p + "root", name="root"),
    ]
    created = client.assets.create(batch)
    assert [a.external_id for a in created] == [p + "leaf", p + "mid", p + "root"]
    by_xid = {a.external_id: a for a in created}
    root = by_xid[p + "root"]
    assert (
        by_xid[p + "mid"].parent_id == root.id
        and by_xid[p + "mid"].parent_external_id == p + "root"
    )
    assert by_xid[p + "leaf"].root_id == root.id
    subtree = client.assets.retrieve_subtree(id=root.id)
    assert sorted(a.external_id for a in subtree) == sorted(by_xid)
    assert [a.external_id for a in client.assets.retrieve_subtree(id=root.id, depth=1)] == [
        p + "root",
        p + "mid",
    ]
    listed = client.assets.list(
        external_id_prefix=p, aggregated_properties=["depth", "path", "child_count"]
    )
    aggregates = {a.external_id: a.aggregates for a in listed}
    assert aggregates[p + "root"].child_count == 1 and aggregates[p + "leaf"].child_count == 0
    leaf = by_xid[p + "leaf"]
    assert aggregates[p + "leaf"].depth == 2
    assert [x["id"] for x in aggregates[p + "leaf"].path] == [
        root.id,
        by_xid[p + "mid"].id,
        leaf.id,
    ]


def test_create_hierarchy_with_upsert(client: CogniteClient) -> None:
    p = _prefix()
    assets = [AssetWrite(external_id=p + "r", name="r")] + [
        AssetWrite(external_id=f"{p}c{i}", name=f"c{i}", parent_external_id=p + "r")
        for i in range(5)
    ]
    created = client.assets.create_hierarchy(assets)
    assert len(created) == 6
    again = [
        AssetWrite(external_id=p + "r", name="renamed"),
        AssetWrite(external_id=p + "c5", name="new", parent_external_id=p + "r"),
    ]
    res = client.assets.create_hierarchy(again, upsert=True)
    assert {a.name for a in res} == {"renamed", "new"}
    assert client.assets.retrieve(external_id=p + "r").name == "renamed"
    assert _count(client, p) == 7


def test_list_filters(client: CogniteClient) -> None:
    p = _prefix()
    root = client.assets.create(AssetWrite(external_id=p + "root", name="root", source="plant"))
    kids = client.assets.create(
        [
            AssetWrite(
                external_id=p + "k1",
                name="pump",
                parent_id=root.id,
                metadata={"kind": "pump", "site": "a"},
                data_set_id=77,
            ),
            AssetWrite(
                external_id=p + "k2",
                name="valve",
                parent_id=root.id,
                metadata={"kind": "valve", "site": "a"},
            ),
            AssetWrite(
                external_id=p + "k3",
                name="pump",
                parent_external_id=p + "k1",
                metadata={"kind": "pump"},
            ),
        ]
    )
    k1, k2, k3 = kids

    def xids(**kw: Any) -> list[str]:
        return sorted(
            a.external_id for a in client.assets.list(external_id_prefix=p, limit=-1, **kw)
        )

    assert xids() == sorted([p + "root", p + "k1", p + "k2", p + "k3"])
    assert xids(name="pump") == [p + "k1", p + "k3"]
    assert xids(parent_ids=[root.id]) == [p + "k1", p + "k2"]
    assert xids(parent_external_ids=[p + "k1"]) == [p + "k3"]
    assert xids(metadata={"kind": "pump", "site": "a"}) == [p + "k1"]
    assert xids(metadata={"kind": "nothing"}) == []
    assert xids(data_set_ids=[77]) == [p + "k1"]
    assert xids(source="plant") == [p + "root"]
    assert xids(root=True) == [p + "root"]
    assert xids(root=False) == [p + "k1", p + "k2", p + "k3"]
    assert xids(asset_subtree_external_ids=[p + "k1"]) == [p + "k1", p + "k3"]
    assert xids(created_time=TimestampRange(min=k1.created_time, max=k3.created_time)) == [
        p + "k1",
        p + "k2",
        p + "k3",
    ]
    assert xids(created_time={"max": root.created_time}) == [p + "root"]
    client.assets.update(AssetUpdate(id=k2.id).description.set("touched"))
    touched = client.assets.retrieve(id=k2.id)
    assert xids(last_updated_time={"min": touched.last_updated_time}) == [p + "k2"]
    assert client.assets.aggregate_count(filter={"external_id_prefix": p, "name": "pump"}) == 2
    with pytest.raises(CogniteNotFoundError):
        client.assets.list(asset_subtree_ids=[987654321987])


def test_pagination_over_pages_with_raw_cursor(client: CogniteClient, http: Http) -> None:
    p = _prefix()
    client.assets.create([AssetWrite(external_id=f"{p}{i:03d}", name=f"n{i}") for i in range(25)])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        body: dict[str, Any] = {"filter": {"externalIdPrefix": p}, "limit": 7}
        if cursor:
            body["cursor"] = cursor
        res = http.post("/assets/list", body)
        assert res.status_code == 200, res.text
        data = res.json()
        assert len(data["items"]) <= 7
        seen += [a["externalId"] for a in data["items"]]
        pages += 1
        cursor = data.get("nextCursor")
        if not cursor:
            break
    assert pages >= 4
    assert sorted(seen) == [f"{p}{i:03d}" for i in range(25)]
    # the SDK following cursors with a limit smaller than the total
    assert len(client.assets.list(external_id_prefix=p, limit=10)) == 10
    bad = http.post("/assets/list", {"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and "cursor" in bad.json()["error"]["message"]


def test_sdk_lists_more_than_one_page_and_partitions(client: CogniteClient) -> None:
    p = _prefix()
    n = 1203  # the SDK creates in chunks of 1000 and lists 1000 per page
    created = client.assets.create(
        [AssetWrite(external_id=f"{p}{i}", name="bulk") for i in range(n)]
    )
    assert len(created) == n
    everything = client.assets.list(external_id_prefix=p, limit=None)
    assert len(everything) == n and len({a.id for a in everything}) == n
    for parts in (3, 10):
        partitioned = client.assets.list(external_id_prefix=p, limit=None, partitions=parts)
        ids = [a.id for a in partitioned]
        assert len(ids) == n and set(ids) == {a.id for a in created}
    assert _count(client, p) == n
    assert len(list(client.assets(chunk_size=500, external_id_prefix=p))) == 3


def test_updates_set_add_remove(client: CogniteClient) -> None:
    p = _prefix()
    a = client.assets.create(
        AssetWrite(
            external_id=p + "a", name="a", description="d", metadata={"x": "1", "y": "2"}, labels=[]
        )
    )
    upd = (
        AssetUpdate(id=a.id)
        .name.set("renamed")
        .metadata.add({"z": "3"})
        .metadata.remove(["x"])
        .description.set(None)
        .labels.add(["pumps", "critical"])
        .source.set("src")
    )
    res = client.assets.update(upd)
    assert res.name == "renamed" and res.metadata == {"y": "2", "z": "3"}
    assert res.description is None and res.source == "src"
    assert sorted(lb.external_id for lb in res.labels) == ["critical", "pumps"]
    assert res.last_updated_time >= a.last_updated_time
    res = client.assets.update(
        AssetUpdate(external_id=p + "a").metadata.set({"only": "this"}).labels.remove("pumps")
    )
    assert res.metadata == {"only": "this"} and [lb.external_id for lb in res.labels] == [
        "critical"
    ]
    res = client.assets.update(AssetUpdate(id=a.id).external_id.set(p + "b"))
    assert res.external_id == p + "b" and client.assets.retrieve(external_id=p + "a") is None
    # updating from a full Asset object (the SDK sends every field, both parent ids included)
    full = client.assets.retrieve(id=a.id)
    full.description = "from object"
    assert client.assets.update(full).description == "from object"


def test_move_subtree_updates_root_and_refuses_cycles(client: CogniteClient) -> None:
    p = _prefix()
    r1 = client.assets.create(AssetWrite(external_id=p + "r1", name="r1"))
    r2 = client.assets.create(AssetWrite(external_id=p + "r2", name="r2"))
    mid, leaf = client.assets.create(
        [
            AssetWrite(external_id=p + "mid", name="mid", parent_id=r1.id),
            AssetWrite(external_id=p + "leaf", name="leaf", parent_external_id=p + "mid"),
        ]
    )
    moved = client.assets.update(AssetUpdate(id=mid.id).parent_external_id.set(p + "r2"))
    assert moved.parent_id == r2.id and moved.root_id == r2.id
    assert client.assets.retrieve(id=leaf.id).root_id == r2.id
    assert [a.id for a in client.assets.retrieve_subtree(id=r1.id)] == [r1.id]
    # mid under its own child: a cycle
    with pytest.raises(CogniteAPIError) as err:
        client.assets.update(
            [
                AssetUpdate(id=r1.id).name.set("should not stick"),
                AssetUpdate(id=mid.id).parent_id.set(leaf.id),
            ]
        )
    assert err.value.code == 400 and "cycle" in err.value.message
    assert client.assets.retrieve(id=r1.id).name == "r1"  # nothing of the batch was written
    with pytest.raises(CogniteAPIError) as err:
        client.assets.update(AssetUpdate(id=mid.id).parent_id.set(mid.id))
    assert "cycle" in err.value.message
    assert client.assets.retrieve(id=mid.id).parent_id == r2.id


def test_delete_recursive_and_unknown(client: CogniteClient) -> None:
    p = _prefix()
    root = client.assets.create(AssetWrite(external_id=p + "root", name="root"))
    client.assets.create(
        [
            AssetWrite(external_id=p + "c", name="c", parent_id=root.id),
            AssetWrite(external_id=p + "g", name="g", parent_external_id=p + "c"),
        ]
    )
    with pytest.raises(CogniteAPIError) as err:
        client.assets.delete(id=root.id)
    assert err.value.code == 400 and "recursive" in err.value.message
    assert _count(client, p) == 3
    with pytest.raises(CogniteNotFoundError):
        client.assets.delete(external_id=[p + "g", p + "nope"])
    assert _count(client, p) == 3
    client.assets.delete(external_id=[p + "g", p + "nope"], ignore_unknown_ids=True)
    assert _count(client, p) == 2
    client.assets.delete(id=root.id, recursive=True)
    assert _count(client, p) == 0


def test_duplicate_external_ids_write_nothing(client: CogniteClient) -> None:
    p = _prefix()
    with pytest.raises(CogniteDuplicatedError) as err:
        client.assets.create(
            [AssetWrite(external_id=p + "a", name="a"), AssetWrite(external_id=p + "a", name="b")]
        )
    assert err.value.duplicated == [{"externalId": p + "a"}]
    assert _count(client, p) == 0
    client.assets.create(AssetWrite(external_id=p + "a", name="a"))
    with pytest.raises(CogniteDuplicatedError) as err:
        client.assets.create(
            [AssetWrite(external_id=p + "new", name="n"), AssetWrite(external_id=p + "a", name="a")]
        )
    assert err.value.duplicated == [{"externalId": p + "a"}]
    assert _count(client, p) == 1
    client.assets.create(AssetWrite(external_id=p + "b", name="b"))
    with pytest.raises(CogniteDuplicatedError):
        client.assets.update(AssetUpdate(external_id=p + "b").external_id.set(p + "a"))


def test_unknown_parents_and_update_targets(client: CogniteClient) -> None:
    p = _prefix()
    with pytest.raises(CogniteNotFoundError) as err:
        client.assets.create(
            [
                AssetWrite(external_id=p + "ok", name="ok"),
                AssetWrite(external_id=p + "a", name="a", parent_external_id=p + "ghost"),
                AssetWrite(external_id=p + "b", name="b", parent_id=987654321987),
            ]
        )
    assert {"externalId": p + "ghost"} in err.value.not_found and {
        "id": 987654321987
    } in err.value.not_found
    assert _count(client, p) == 0
    with pytest.raises(CogniteNotFoundError) as err:
        client.assets.update(AssetUpdate(external_id=p + "ghost").name.set("x"))
    assert err.value.not_found == [{"externalId": p + "ghost"}]
    a = client.assets.create(AssetWrite(external_id=p + "a", name="a"))
    with pytest.raises(CogniteNotFoundError):
        client.assets.update(AssetUpdate(id=a.id).parent_id.set(987654321987))


def test_cycle_inside_one_create_batch(client: CogniteClient, http: Http) -> None:
    p = _prefix()
    res = http.post(
        "/assets",
        {
            "items": [
                {"externalId": p + "a", "name": "a", "parentExternalId": p + "b"},
                {"externalId": p + "b", "name": "b", "parentExternalId": p + "a"},
            ]
        },
    )
    assert res.status_code == 400 and "cycle" in res.json()["error"]["message"]
    assert _count(client, p) == 0


def test_invalid_input_is_a_clear_400_and_writes_nothing(client: CogniteClient, http: Http) -> None:
    p = _prefix()
    cases = [
        ({"externalId": p + "x", "name": ""}, "name"),
        ({"externalId": p + "x", "name": "n" * 141}, "140"),
        ({"externalId": p + "x"}, "name is required"),
        ({"externalId": p + "x", "name": "n", "metadata": {"k": 1}}, "metadata"),
        ({"externalId": "e" * 256, "name": "n"}, "externalId"),
        ({"externalId": p + "x", "name": "n", "parentId": 1, "parentExternalId": "y"}, "not both"),
        ({"externalId": p + "x", "name": "n", "colour": "red"}, "colour"),
    ]
    for bad, words in cases:
        res = http.post("/assets", {"items": [{"externalId": p + "good", "name": "good"}, bad]})
        assert res.status_code == 400, (bad, res.text)
        message = res.json()["error"]["message"]
        assert words in message, (bad, message)
    assert _count(client, p) == 0
    res = http.post("/assets", {"items": [{"name": f"n{i}"} for i in range(1001)]})
    assert res.status_code == 400 and "1000" in res.json()["error"]["message"]
    res = http.post("/assets/list", {"partition": "11/12"})
    assert res.status_code == 400 and "partition" in res.json()["error"]["message"]
    res = http.post(
        "/assets/update", {"items": [{"externalId": p + "x", "update": {"rootId": {"set": 1}}}]}
    )
    assert res.status_code == 400 and "rootId" in res.json()["error"]["message"]
    res = http.post("/assets/list", {"filter": {"colour": "red"}})
    assert res.status_code == 400 and "colour" in res.json()["error"]["message"]
    with pytest.raises(CogniteAPIError):
        client.assets.create(AssetWrite(external_id=p + "x", name=" "))


def test_assets_need_capabilities(server: LiveServer, client: CogniteClient) -> None:
    p = _prefix()
    client.assets.create(AssetWrite(external_id=p + "a", name="a"))
    reader = server.client(server.create_client("asset-reader", "--capability", "assetsAcl:READ"))
    assert [a.name for a in reader.assets.list(external_id_prefix=p)] == ["a"]
    with pytest.raises(CogniteAPIError) as err:
        reader.assets.create(AssetWrite(external_id=p + "b", name="b"))
    assert err.value.code == 403 and "assetsAcl:WRITE" in err.value.message
    nobody = server.client(server.create_client("no-assets", "--capability", "rawAcl:READ"))
    with pytest.raises(CogniteAPIError) as err:
        nobody.assets.list()
    assert err.value.code == 403
