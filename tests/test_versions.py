"""Function versions (docs/versions.md): new code for a function that keeps its id, schedules
and calls; rollback; the REST extension, on a live server with the official cognite-sdk.

Handlers return their version's marker, so a response shows which code ran it; the call
object's ``functionVersion`` says which version it was accepted on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cognite.client import CogniteClient
from cognite.client.exceptions import CogniteAPIError

from tests.live import LiveServer, sdk_client, upload, wait_for, zip_of

OTHER = "versions-other"


def handler(marker: str, extra: str = "") -> str:
    return (
        f"{extra}\nMARKER = {marker!r}\n\n"
        "def handle(data, function_call_info):\n"
        "    return {'marker': MARKER, 'info': function_call_info}\n"
    )


def code(marker: str, extra: str = "") -> bytes:
    return zip_of({"handler.py": handler(marker, extra)})


def api(client: CogniteClient, path: str) -> str:
    return f"/api/v1/projects/{client.config.project}/functions{path}"


def versions(client: CogniteClient, fid: int) -> list[dict[str, Any]]:
    return list(client.get(api(client, f"/{fid}/versions")).json()["items"])


def deploy_version(client: CogniteClient, fid: int, content: bytes, **settings: Any) -> Any:
    file_id = upload(client, content, name="new.zip")
    return client.post(api(client, f"/{fid}/versions"), json={"items": [{"fileId": file_id, **settings}]})


def function_json(client: CogniteClient, fid: int) -> dict[str, Any]:
    return dict(client.get(api(client, f"/{fid}")).json())


def wait_current(client: CogniteClient, fid: int, number: int, timeout: float = 180) -> dict[str, Any]:
    def current() -> dict[str, Any] | None:
        fn = function_json(client, fid)
        return fn if fn.get("version") == number else None

    return dict(wait_for(current, timeout=timeout, interval=0.05, what=f"version {number} of {fid} current"))


def wait_version(client: CogniteClient, fid: int, number: int, timeout: float = 180) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        v = next(v for v in versions(client, fid) if v["version"] == number)
        return v if v["status"] in ("Ready", "Failed") else None

    return dict(wait_for(ended, timeout=timeout, interval=0.1, what=f"version {number} of {fid} built"))


def create(client: CogniteClient, name: str, marker: str = "v1", external_id: str | None = None) -> Any:
    fn = client.functions.create(name=name, external_id=external_id, file_id=upload(client, code(marker)))
    wait_for(lambda: client.functions.retrieve(id=fn.id).status in ("Ready", "Failed"), timeout=300,
             what=f"function {name} to deploy")
    fn = client.functions.retrieve(id=fn.id)
    assert fn.status == "Ready", fn.error
    return fn


def raw_calls(client: CogniteClient, fid: int) -> list[dict[str, Any]]:
    body = {"limit": 10_000}
    return list(client.post(api(client, f"/{fid}/calls/list"), json=body).json()["items"])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(
        tmp_path_factory.mktemp("versions-home"),
        env={"FNHOST_SCHEDULER_SECONDS_CRON": "true", "FNHOST_VERSIONS_KEPT": "2"},
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def creds(live: LiveServer) -> dict[str, Any]:
    return live.create_client("versions-tests")


@pytest.fixture(scope="module")
def client(creds: dict[str, Any]) -> CogniteClient:
    return sdk_client(creds)


# -- the "Done when" ------------------------------------------------------------------
def test_redeploys_and_a_rollback_under_calls_and_a_schedule_lose_and_double_nothing(
    client: CogniteClient, creds: dict[str, Any]
) -> None:
    fn = create(client, "rollout", "v1", external_id="rollout")
    schedule = client.functions.schedules.create(
        name="every-second", cron_expression="* * * * * *", function_id=fn.id,
        client_credentials={"client_id": creds["client_id"], "client_secret": creds["client_secret"]},
    )
    stop = threading.Event()
    seen: list[tuple[float, int]] = []  # (when the caller saw version n current, n)
    errors: list[BaseException] = []
    made: list[tuple[float, int]] = []  # (monotonic before the call, call id)

    def caller() -> None:
        try:
            while not stop.is_set():
                made.append((time.monotonic(), client.functions.call(id=fn.id, data={}, wait=False).id))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=caller)
    thread.start()
    try:
        time.sleep(1.5)
        for n in (2, 3, 4):
            r = deploy_version(client, fn.id, code(f"v{n}"))
            assert r.status_code == 201 and r.json()["items"][0]["version"] == n
            wait_current(client, fn.id, n)
            seen.append((time.monotonic(), n))
            time.sleep(1.5)
        r = client.post(api(client, f"/{fn.id}/versions/rollback"), json={"version": 2})
        assert r.json()["items"][0] == {**r.json()["items"][0], "version": 2, "current": True}
        seen.append((time.monotonic(), 2))
        time.sleep(1.5)
    finally:
        stop.set()
        thread.join(60)
        client.functions.schedules.delete(id=schedule.id)
    assert not errors, errors
    schedule_stopped = time.time() * 1000

    def all_ended() -> list[dict[str, Any]] | None:
        calls = raw_calls(client, fn.id)
        return calls if all(c["status"] != "Running" for c in calls) else None

    calls = wait_for(all_ended, timeout=120, what="every call to end")
    by_id = {c["id"]: c for c in calls}
    assert {cid for _, cid in made} <= set(by_id)
    assert all(c["status"] == "Completed" for c in calls), [c for c in calls if c["status"] != "Completed"]
    # every response comes from the code of the version its call was accepted on …
    for c in calls:
        response = client.functions.calls.get_response(call_id=c["id"], function_id=fn.id)
        assert response["marker"] == f"v{c['functionVersion']}", (c, response)
        assert response["info"]["function_version"] == c["functionVersion"]
    # … and the versions, in the order calls were accepted, switch once each: 1, 2, 3, 4, 2
    order = [by_id[i]["functionVersion"] for i in sorted(by_id)]
    runs = [v for i, v in enumerate(order) if i == 0 or v != order[i - 1]]
    assert runs == [1, 2, 3, 4, 2], runs
    # a call made after the caller saw a version current was accepted on it, or on the next
    # one (switched to before the request that made it returned)
    sequence = [n for _, n in seen]
    for when, cid in made:
        k = sum(1 for t, _ in seen if t < when)
        if k:
            assert by_id[cid]["functionVersion"] in sequence[k - 1 : k + 1], (cid, k)
    assert sum(1 for _, cid in made if by_id[cid]["functionVersion"] == 4) > 0
    # the schedule: each due second fired once, none missing, while the function changed
    fired = sorted(c["scheduledTime"] for c in calls if c.get("scheduleId") == schedule.id)
    assert len(fired) == len(set(fired)), "a due time fired twice"
    assert fired and fired[-1] < schedule_stopped
    assert fired == list(range(fired[0], fired[-1] + 1000, 1000)), "a due time was missed"
    assert len(fired) >= 6
    # id, external id and the calls stayed; the versions list says what is current
    assert client.functions.retrieve(external_id="rollout").id == fn.id
    listed = versions(client, fn.id)
    assert [v["version"] for v in listed] == [4, 3, 2, 1]
    assert [v["current"] for v in listed] == [False, False, True, False]


# -- rules, each with its attack ------------------------------------------------------------------
def test_a_version_that_fails_to_build_leaves_the_current_one_serving(client: CogniteClient) -> None:
    fn = create(client, "fails-later", "v1")
    r = deploy_version(client, fn.id, code("v2", extra="import fnhost_no_such_module"))
    assert r.status_code == 201
    failed = wait_version(client, fn.id, 2)
    assert failed["status"] == "Failed" and "fnhost_no_such_module" in failed["error"]["message"]
    shown = function_json(client, fn.id)
    assert shown["status"] == "Ready" and shown["version"] == 1
    assert shown["versionError"]["version"] == 2 and "fnhost_no_such_module" in shown["versionError"]["message"]
    call = client.functions.call(id=fn.id, data={})
    assert call.status == "Completed" and call.get_response()["marker"] == "v1"
    # a failed version cannot be rolled back to
    with pytest.raises(CogniteAPIError) as err:
        client.post(api(client, f"/{fn.id}/versions/rollback"), json={"version": 2})
    assert err.value.code == 409 and "Failed" in err.value.message
    # the next good version clears the error
    deploy_version(client, fn.id, code("v3"))
    assert wait_current(client, fn.id, 3).get("versionError") is None


def test_identical_code_and_settings_make_no_version(client: CogniteClient) -> None:
    fn = create(client, "same-code", "v1")
    r = deploy_version(client, fn.id, code("v1"))  # the same bytes, uploaded as a new file
    assert r.status_code == 200 and r.json()["unchanged"] is True
    assert r.json()["items"][0]["version"] == 1
    assert [v["version"] for v in versions(client, fn.id)] == [1]
    # the same code with another setting is a new version
    r = deploy_version(client, fn.id, code("v1"), envVars={"MODE": "b"})
    assert r.status_code == 201 and r.json()["unchanged"] is False
    wait_current(client, fn.id, 2)
    assert client.functions.retrieve(id=fn.id).env_vars == {"MODE": "b"}
    # deploying it again (while it builds or once current) makes none either
    r = deploy_version(client, fn.id, code("v1"), envVars={"MODE": "b"})
    assert r.status_code == 200 and r.json()["unchanged"] is True


def test_rollback_by_default_goes_to_the_version_before_and_retention_retires_old_ones(
    client: CogniteClient,
) -> None:
    fn = create(client, "keeps-two", "v1")
    for n in (2, 3, 4):
        deploy_version(client, fn.id, code(f"v{n}"))
        wait_current(client, fn.id, n)
    listed = {v["version"]: v for v in versions(client, fn.id)}
    # FNHOST_VERSIONS_KEPT=2: versions 3 and 2 are kept, 1 is retired
    assert listed[1]["retiredTime"] and not listed[1]["rollbackable"]
    assert listed[2]["rollbackable"] and listed[3]["rollbackable"] and not listed[4]["rollbackable"]
    with pytest.raises(CogniteAPIError) as err:
        client.post(api(client, f"/{fn.id}/versions/rollback"), json={"version": 1})
    assert err.value.code == 409 and "retired" in err.value.message
    with pytest.raises(CogniteAPIError) as err:
        client.post(api(client, f"/{fn.id}/versions/rollback"), json={"version": 4})
    assert err.value.code == 409 and "already the current" in err.value.message
    with pytest.raises(CogniteAPIError) as err:
        client.post(api(client, f"/{fn.id}/versions/rollback"), json={"version": 9})
    assert err.value.code in (400, 404) and "no version 9" in err.value.message
    started = time.monotonic()
    r = client.post(api(client, f"/{fn.id}/versions/rollback"), json={})
    assert r.json()["items"][0]["version"] == 3
    call = client.functions.call(id=fn.id, data={})
    assert time.monotonic() - started < 1.0
    assert call.get_response()["marker"] == "v3"
    assert function_json(client, fn.id)["version"] == 3


def test_create_with_an_existing_external_id_still_conflicts(client: CogniteClient) -> None:
    create(client, "taken", "v1", external_id="versions-taken")
    with pytest.raises(CogniteAPIError) as err:
        client.functions.create(name="taken", external_id="versions-taken", file_id=upload(client, code("v2")))
    assert err.value.code == 409


def test_deploy_refuses_what_a_version_cannot_change(client: CogniteClient) -> None:
    fn = create(client, "strict", "v1")
    file_id = upload(client, code("v2"))
    for item, word in (({"fileId": file_id, "secrets": {"k": "v"}}, "secrets"),
                       ({"fileId": file_id, "name": "renamed"}, "name"),
                       ({"fileId": 123456789}, "123456789"),
                       ({"fileId": file_id, "functionPath": "../x.py"}, "function path")):
        with pytest.raises(CogniteAPIError) as err:
            client.post(api(client, f"/{fn.id}/versions"), json={"items": [item]})
        assert err.value.code == 400 and word in err.value.message, err.value.message
    assert [v["version"] for v in versions(client, fn.id)] == [1]


def test_capabilities_are_checked(live: LiveServer, client: CogniteClient) -> None:
    fn = create(client, "guarded", "v1")
    reader = sdk_client(live.create_client("versions-reader", "-c", "functionsAcl:READ", "-c", "filesAcl:READ,WRITE"))
    assert [v["version"] for v in versions(reader, fn.id)] == [1]
    for path, body in (("/versions", {"items": [{"fileId": upload(reader, code("v2"))}]}),
                       ("/versions/rollback", {})):
        with pytest.raises(CogniteAPIError) as err:
            reader.post(api(reader, f"/{fn.id}{path}"), json=body)
        assert err.value.code == 403 and "functionsAcl:WRITE" in err.value.message
    nobody = sdk_client(live.create_client("versions-nobody", "-c", "filesAcl:READ"))
    with pytest.raises(CogniteAPIError) as err:
        versions(nobody, fn.id)
    assert err.value.code == 403 and "functionsAcl:READ" in err.value.message


def test_another_projects_principal_cannot_see_or_change_versions(live: LiveServer, client: CogniteClient) -> None:
    fn = create(client, "private", "v1")
    deploy_version(client, fn.id, code("v2"))
    wait_current(client, fn.id, 2)
    live.cli("admin", "projects", "create", OTHER)
    outsider = live.create_client("versions-outsider", "--project", OTHER, "-c", "functionsAcl:READ,WRITE")
    token = httpx.post(outsider["token_url"], data={
        "grant_type": "client_credentials", "client_id": outsider["client_id"],
        "client_secret": outsider["client_secret"], "scope": " ".join(outsider["scopes"]),
    }).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    base = f"{live.base_url}/api/v1/projects"
    # in the function's project: no access at all
    for method, path, body in (("GET", "/versions", None), ("POST", "/versions/rollback", {"version": 1})):
        r = httpx.request(method, f"{base}/{client.config.project}/functions/{fn.id}{path}", json=body, headers=headers)
        assert r.status_code == 401, r.text
    # in its own project, the id names nothing
    r = httpx.get(f"{base}/{OTHER}/functions/{fn.id}/versions", headers=headers)
    assert r.status_code in (400, 404) and r.json()["error"]["message"] == f"Function {fn.id} does not exist."
    r = httpx.post(f"{base}/{OTHER}/functions/{fn.id}/versions/rollback", json={"version": 1}, headers=headers)
    assert r.status_code in (400, 404)
    assert function_json(client, fn.id)["version"] == 2


def test_a_call_records_its_version_and_the_function_object_stays_sdk_shaped(client: CogniteClient) -> None:
    fn = create(client, "shaped", "v1")
    call = client.functions.call(id=fn.id, data={})
    raw = client.get(api(client, f"/{fn.id}/calls/{call.id}")).json()
    assert raw["functionVersion"] == 1
    again = client.functions.retrieve(id=fn.id)
    assert again.id == fn.id and again.status == "Ready"  # the SDK loads it, ignoring version


def test_ids_and_versions_out_of_range_are_a_clear_400(live: LiveServer, client: CogniteClient) -> None:
    fn = create(client, "ranges", "v1")
    huge = 2**70
    for method, path, body in (
        ("GET", f"/{huge}/versions", None),
        ("GET", f"/{fn.id}/versions/{huge}", None),
        ("POST", f"/{fn.id}/versions/rollback", {"version": huge}),
        ("POST", f"/{fn.id}/versions", {"items": [{"fileId": huge}]}),
    ):
        with pytest.raises(CogniteAPIError) as err:
            client.get(api(client, path)) if method == "GET" else client.post(api(client, path), json=body)
        assert err.value.code == 400, (path, err.value.message)
    for body in ({"version": "2"}, {"version": 0}, {"to": 1}, []):
        with pytest.raises(CogniteAPIError) as err:
            client.post(api(client, f"/{fn.id}/versions/rollback"), json=body)
        assert err.value.code == 400, (body, err.value.message)


def test_a_function_whose_first_build_failed_is_fixed_by_a_new_version_keeping_its_id(
    client: CogniteClient,
) -> None:
    broken = client.functions.create(
        name="fixed-later", external_id="fixed-later", file_id=upload(client, code("v1", extra="import fnhost_nope"))
    )
    wait_for(lambda: client.functions.retrieve(id=broken.id).status in ("Ready", "Failed"), timeout=300,
             what="the first build to end")
    assert client.functions.retrieve(id=broken.id).status == "Failed"
    with pytest.raises(CogniteAPIError):
        client.functions.call(id=broken.id, data={})
    assert deploy_version(client, broken.id, code("v2")).status_code == 201
    fixed = wait_current(client, broken.id, 2)
    assert fixed["status"] == "Ready" and "error" not in fixed and fixed["externalId"] == "fixed-later"
    assert client.functions.call(id=broken.id, data={}).get_response()["marker"] == "v2"
