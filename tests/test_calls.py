"""Calls through the official cognite-sdk against a live server."""

from __future__ import annotations

import io
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from cognite.client import CogniteClient
from cognite.client.exceptions import CogniteAPIError

from tests.live import LiveServer, wait_for


def handle(client, data, secrets, function_call_info):  # type: ignore[no-untyped-def]
    import os
    import time

    case = data.get("case")
    if case == "seed":
        print("secret is", secrets["api-key"])
        return {"subject": client.iam.token.inspect().subject, "files": len(client.files.list(limit=5))}
    if case == "info":
        return {"info": function_call_info, "env": os.environ.get("GREETING"), "cwd": os.getcwd()}
    if case == "raise":
        raise RuntimeError("handler failed with " + secrets["api-key"])
    if case == "nonjson":
        return {1, 2}
    if case == "big":
        return "x" * (2 * 1024 * 1024)
    if case == "oom":
        blocks = []
        while True:
            blocks.append(bytearray(100 * 1024 * 1024))
    if case == "sleep":
        time.sleep(data["seconds"])
    if case == "spin":  # this much CPU time, however busy the machine is
        end = time.process_time() + data["seconds"]
        while time.process_time() < end:
            pass
    if case == "alloc":
        block = bytearray(data["mb"] * 1024 * 1024)
        for i in range(0, len(block), 4096):
            block[i] = 1
        return len(block)
    return {"echo": data}


def prefix(client: CogniteClient) -> str:
    return f"/api/v1/projects/{client.config.project}"


def ready(fn: Any) -> Any:
    wait_for(lambda: fn.update() or fn.status not in ("Queued", "Deploying"), timeout=300, what="deploy")
    assert fn.status == "Ready", fn.error
    return fn


@pytest.fixture(scope="module")
def fn(client: CogniteClient) -> Any:
    created = client.functions.create(
        name="calls-test",
        function_handle=handle,
        secrets={"api-key": "very-secret-value"},
        env_vars={"GREETING": "hello"},
        memory=0.5,
    )
    return ready(created)


def test_seed_example_uses_client_and_redacts_secrets(client: CogniteClient, fn: Any) -> None:
    call = fn.call({"case": "seed"})
    assert call.status == "Completed", call.error
    response = call.get_response()
    assert response["subject"] and response["files"] >= 0
    logs = call.get_logs()
    assert [line.message for line in logs] == ["secret is ***"]
    assert fn.update() is None and fn.last_called is not None


def test_function_call_info_env_and_cwd(client: CogniteClient, fn: Any) -> None:
    call = fn.call({"case": "info"})
    body = call.get_response()
    # CDF's keys, and fnhost's version the call runs (docs/versions.md)
    assert body["info"] == {"function_id": fn.id, "call_id": call.id, "function_version": 1}
    assert body["env"] == "hello"
    assert body["cwd"] == "/function"  # its code, read-only, in its sandbox (docs/isolation.md)


def test_exception_gives_failed_with_traceback_in_logs(client: CogniteClient, fn: Any) -> None:
    call = fn.call({"case": "raise"})
    assert call.status == "Failed"
    assert call.error["message"] == "RuntimeError: handler failed with ***"
    messages = [line.message for line in call.get_logs()]
    assert messages[0] == "Traceback (most recent call last):"
    assert messages[-1] == "RuntimeError: handler failed with ***"
    assert not any("very-secret-value" in m for m in messages)


def test_bad_results(client: CogniteClient, fn: Any) -> None:
    call = fn.call({"case": "nonjson"})
    assert call.status == "Failed"
    assert "not JSON-serializable" in call.error["message"]
    call = fn.call({"case": "big"})
    assert call.status == "Failed"
    assert "more than the limit of 1048576 bytes" in call.error["message"]
    call = fn.call({"case": "oom"})
    assert call.status == "Failed"
    assert "ran out of memory (limit 0.5 GB)" in call.error["message"]


def test_fifty_parallel_calls_complete(client: CogniteClient, fn: Any) -> None:
    def one(i: int) -> Any:
        return fn.call({"case": "echo", "i": i})

    with ThreadPoolExecutor(10) as pool:
        calls = list(pool.map(one, range(50)))
    assert [c.status for c in calls] == ["Completed"] * 50
    assert sorted(c.get_response()["echo"]["i"] for c in calls[:5]) == [0, 1, 2, 3, 4]


def test_list_retrieve_and_pagination(client: CogniteClient, fn: Any) -> None:
    first = fn.call({"case": "echo"})
    listed = client.functions.calls.list(function_id=fn.id, limit=-1)
    assert len(listed) >= 50
    ids = [c.id for c in listed]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    assert client.functions.calls.retrieve(call_id=first.id, function_id=fn.id).status == "Completed"
    assert client.functions.calls.retrieve(call_id=10**12, function_id=fn.id) is None
    failed = client.functions.calls.list(function_id=fn.id, status="Failed", limit=-1)
    assert failed and all(c.status == "Failed" for c in failed)
    # the server-side cursor: pages of 10 newest first
    body = client.post(f"{prefix(client)}/functions/{fn.id}/calls/list", json={"limit": 10}).json()
    page2 = client.post(f"{prefix(client)}/functions/{fn.id}/calls/list", json={"limit": 10, "cursor": body["nextCursor"]}).json()
    assert [c["id"] for c in body["items"] + page2["items"]] == ids[:20]
    # the GET form, with filters as query parameters
    got = client.get(f"{prefix(client)}/functions/{fn.id}/calls", params={"status": "Failed", "limit": 1000}).json()
    assert [c["id"] for c in got["items"]] == [c.id for c in failed]


def test_the_reply_waits_for_a_fast_call(client: CogniteClient, fn: Any) -> None:
    # cognite-sdk polls with backoff while a call is Running; a fast call's reply has ended
    call = fn.call({"case": "echo"}, wait=False)
    assert call.status == "Completed" and call.end_time is not None
    # ?waitSeconds=0 answers at once, before the call has run
    nonce = client.iam.sessions.create(session_type="TOKEN_EXCHANGE").nonce
    body = client.post(
        f"{prefix(client)}/functions/{fn.id}/call",
        json={"data": {"case": "sleep", "seconds": 1}, "nonce": nonce},
        params={"waitSeconds": 0},
    ).json()
    assert body["status"] == "Running" and "endTime" not in body


def test_server_side_wait(client: CogniteClient, fn: Any, admin_creds: dict[str, Any]) -> None:
    call = fn.call({"case": "sleep", "seconds": 3}, wait=False)
    assert call.status == "Running"  # longer than the reply's own wait
    t0 = time.monotonic()
    body = client.get(f"{prefix(client)}/functions/{fn.id}/calls/{call.id}", params={"waitSeconds": 20}).json()
    assert body["status"] == "Completed" and time.monotonic() - t0 < 10
    assert "endTime" in body


def test_bad_input(client: CogniteClient, fn: Any) -> None:
    with pytest.raises(CogniteAPIError) as err:
        client.post(f"{prefix(client)}/functions/{fn.id}/call", json={"data": [1, 2], "nonce": "x"})
    assert err.value.code == 400 and "data must be a JSON object" in err.value.message
    with pytest.raises(CogniteAPIError) as err:
        client.functions.call(id=10**12, data={})
    assert err.value.code in (400, 404)

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("handler.py", "import not_a_real_module\n\ndef handle(data):\n    return data\n")
    file_id = client.files.upload_bytes(buf.getvalue(), name="bad-import.zip").id
    failed = client.functions.create(name="bad-import", file_id=file_id)
    wait_for(lambda: failed.update() or failed.status == "Failed", timeout=120, what="deploy failure")
    with pytest.raises(CogniteAPIError) as err:
        failed.call({})
    assert "failed to deploy" in err.value.message


def test_unauthenticated_request_is_refused(server: LiveServer, fn: Any) -> None:
    r = httpx.post(f"{server.base_url}/api/v1/projects/default/functions/{fn.id}/call", json={"data": {}})
    assert r.status_code == 401


def test_timeout_and_queued_call_waits_for_deploy(start_server: Any) -> None:
    # the reply does not wait for the call here, so the call is seen Running while it waits
    srv = start_server(env={"FNHOST_CALL_TIMEOUT_SECONDS": "2", "FNHOST_CALL_REPLY_WAIT_SECONDS": "0"})
    client = srv.client(srv.create_client("timeouts"))
    created = client.functions.create(name="t", function_handle=handle)
    early = created.call({"case": "echo"}, wait=False)  # still Queued/Deploying: waits
    assert early.status == "Running"
    early.wait()
    assert early.status == "Completed"
    call = created.call({"case": "sleep", "seconds": 30})
    assert call.status == "Timeout"
    assert "time limit of 2 seconds" in call.error["message"]


def test_deleting_a_function_ends_its_running_calls(client: CogniteClient) -> None:
    created = ready(client.functions.create(name="to-delete", function_handle=handle))
    call = created.call({"case": "sleep", "seconds": 60}, wait=False)
    time.sleep(1)
    client.functions.delete(id=created.id)
    assert client.functions.retrieve(id=created.id) is None
    # the server is fine: another function's call still works
    other = ready(client.functions.create(name="after-delete", function_handle=handle))
    assert other.call({"case": "echo"}).status == "Completed"
    assert call.id


def test_each_call_records_what_it_used(client: CogniteClient, fn: Any, server: LiveServer) -> None:
    """CPU against wall time for a CPU-bound and a sleeping call, and the peak of one that
    allocates 300 MB: returned on the call (an fnhost extension the SDK ignores) and counted
    in the per-function histograms."""
    def used(data: dict[str, Any]) -> dict[str, Any]:
        call = fn.call(data)
        assert call.status == "Completed", call.error
        body = client.get(f"{prefix(client)}/functions/{fn.id}/calls/{call.id}").json()
        assert set(body["usage"]) == {"cpuTimeMs", "cpuUserMs", "cpuSystemMs", "peakMemoryBytes",
                                      "queuedMs", "startingMs", "runningMs"}, body
        assert client.functions.calls.retrieve(call_id=call.id, function_id=fn.id).status == "Completed"
        return dict(body["usage"])

    spin, sleep = used({"case": "spin", "seconds": 1.5}), used({"case": "sleep", "seconds": 1.5})
    assert spin["runningMs"] >= 1400 and sleep["runningMs"] >= 1400
    assert spin["cpuTimeMs"] >= 1400 and sleep["cpuTimeMs"] < 250, (spin, sleep)
    alloc = used({"case": "alloc", "mb": 300})
    assert 290 * 2**20 <= alloc["peakMemoryBytes"] < 700 * 2**20, alloc
    metrics = httpx.get(f"{server.base_url}/metrics").text
    for family in ("fnhost_call_cpu_seconds", "fnhost_call_peak_memory_bytes", "fnhost_call_starting_seconds"):
        counts = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                  if line.startswith(f"{family}_count{{") and f'function_id="{fn.id}"' in line]
        assert counts and counts[0] >= 3, (family, counts)
