"""Function code working on data through its ``client``: assets, RAW state, calling functions.

Functions are deployed and called with the official SDK exactly as the user docs show.
"""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from cognite.client import CogniteClient
from cognite.client.data_classes import AssetWrite

from tests.live import LiveServer, wait_for


# The first example of the user docs, unmodified.
def handle(client, data):  # type: ignore[no-untyped-def]
    asset_no = data["assetNo"]
    print("Returning asset number {}".format(asset_no))  # noqa: UP032
    assets = client.assets.list()
    return {"assetName": assets[asset_no].name}


seed_handle = handle


def _data_handle() -> Any:
    # a handle must be named `handle`; a second one lives in this scope
    def handle(client, data):  # type: ignore[no-untyped-def]
        op = data["op"]
        if op == "count":  # state kept in RAW between calls
            row = client.raw.rows.retrieve(data["db"], "state", "counter")
            value = (row.columns["value"] if row else 0) + 1
            client.raw.rows.insert(
                data["db"], "state", {"counter": {"value": value}}, ensure_parent=True
            )
            return {"value": value}
        if op == "call":  # call another function and return its response
            call = client.functions.call(external_id=data["target"], data=data["payload"])
            return {"status": call.status, "response": call.get_response()}
        raise ValueError(op)

    return handle


data_handle = _data_handle()


def ready(fn: Any) -> Any:
    wait_for(
        lambda: fn.update() or fn.status not in ("Queued", "Deploying"), timeout=300, what="deploy"
    )
    assert fn.status == "Ready", fn.error
    return fn


@pytest.fixture(scope="module")
def seed_fn(client: CogniteClient) -> Any:
    return ready(
        client.functions.create(
            name="seed-example",
            external_id=f"seed-{secrets.token_hex(4)}",
            function_handle=seed_handle,
        )
    )


@pytest.fixture(scope="module")
def data_fn(client: CogniteClient) -> Any:
    return ready(
        client.functions.create(
            name="data-user",
            external_id=f"data-{secrets.token_hex(4)}",
            function_handle=data_handle,
        )
    )


def test_seed_example_returns_the_asset_name(client: CogniteClient, seed_fn: Any) -> None:
    client.assets.create(
        AssetWrite(external_id=f"seed-asset-{secrets.token_hex(4)}", name="seed pump")
    )
    expected = client.assets.list()[0].name  # what the caller itself sees first
    call = seed_fn.call(data={"assetNo": 0})
    assert call.status == "Completed", call.get_logs()
    assert call.get_response() == {"assetName": expected}
    assert [line.message for line in call.get_logs()] == ["Returning asset number 0"]


def test_function_keeps_state_in_raw_between_calls(client: CogniteClient, data_fn: Any) -> None:
    db = f"fn-state-{secrets.token_hex(4)}"
    first = data_fn.call(data={"op": "count", "db": db})
    assert first.status == "Completed", first.get_logs()
    assert first.get_response() == {"value": 1}
    second = data_fn.call(data={"op": "count", "db": db})
    assert second.status == "Completed", second.get_logs()
    assert second.get_response() == {"value": 2}
    assert client.raw.rows.retrieve(db, "state", "counter").columns == {"value": 2}
    client.raw.databases.delete(db, recursive=True)


def test_function_calls_another_function(client: CogniteClient, seed_fn: Any, data_fn: Any) -> None:
    client.assets.create(
        AssetWrite(external_id=f"seed-asset-{secrets.token_hex(4)}", name="another")
    )
    expected = client.assets.list()[0].name
    call = data_fn.call(
        data={"op": "call", "target": seed_fn.external_id, "payload": {"assetNo": 0}}
    )
    assert call.status == "Completed", call.get_logs()
    assert call.get_response() == {"status": "Completed", "response": {"assetName": expected}}


def test_function_client_has_only_the_callers_rights(server: LiveServer, data_fn: Any) -> None:
    creds = server.create_client(
        "runs-but-no-raw",
        "-c",
        "functionsAcl:READ,RUN",
        "-c",
        "sessionsAcl:CREATE",
        "-c",
        "filesAcl:READ",
    )
    runner = server.client(creds)
    call = runner.functions.call(
        id=data_fn.id, data={"op": "count", "db": f"denied-{secrets.token_hex(4)}"}
    )
    assert call.status == "Failed"
    assert "rawAcl" in "\n".join(line.message for line in call.get_logs())


def test_assets_inside_a_function_follow_the_callers_rights(
    server: LiveServer, client: CogniteClient, seed_fn: Any
) -> None:
    client.assets.create(AssetWrite(external_id=f"rights-{secrets.token_hex(4)}", name="rights"))
    runner = server.client(
        server.create_client("runs-but-no-assets", "-c", "functionsAcl:READ,RUN", "-c", "sessionsAcl:CREATE")
    )
    denied = runner.functions.call(id=seed_fn.id, data={"assetNo": 0})
    assert denied.status == "Failed"
    logs = "\n".join(line.message for line in denied.get_logs())
    assert "403" in logs and "assetsAcl:READ" in logs
    allowed = seed_fn.call(data={"assetNo": 0})  # the admin's call of the same function
    assert allowed.status == "Completed", allowed.get_logs()


def _chain_handle() -> Any:
    def handle(client, data, function_call_info):  # type: ignore[no-untyped-def]
        # call ourselves one level deeper until the server refuses, and say how deep we got
        depth = data["depth"]
        try:
            call = client.functions.call(id=function_call_info["function_id"], data={"depth": depth + 1})
        except Exception as exc:
            return {"refused_at": depth + 1, "error": str(exc)}
        return call.get_response()

    return handle


def test_chained_calls_stop_at_the_configured_depth(start_server: Any) -> None:
    live = start_server(env={"FNHOST_SESSION_MAX_CHAIN_DEPTH": "2"})
    admin = live.client(live.create_client("chains"))
    fn = ready(admin.functions.create(name="chain", function_handle=_chain_handle()))
    call = fn.call(data={"depth": 0})
    assert call.status == "Completed", call.get_logs()
    result = call.get_response()
    # depth 0 is the user's own call; its session chains to 1 and 2, and 3 is refused
    assert result["refused_at"] == 3, result
    assert "Chained sessions are limited to a depth of 2" in result["error"]
