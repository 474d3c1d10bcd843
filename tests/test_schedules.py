"""Schedules through the official cognite-sdk, the scheduler on real servers, and cron.

Fast tests use a server with the seconds-resolution cron extension
(``FNHOST_SCHEDULER_SECONDS_CRON``, a testing aid) so a schedule fires within seconds;
the wire and bad-input tests use standard 5-field expressions as users write them.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cognite.client import CogniteClient
from cognite.client.data_classes import ClientCredentials, FunctionSchedule
from cognite.client.data_classes.functions import FunctionScheduleWrite
from cognite.client.exceptions import CogniteAPIError, CogniteNotFoundError, CogniteProjectAccessError

from fnhost.errors import InvalidRequest
from fnhost.schedule.cron import describe, parse, zone
from tests.live import LiveServer, sdk_client, wait_for

HANDLER = """
def handle(data, function_call_info):
    return {"data": data, "info": function_call_info}
"""


def zip_of(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def deploy(client: CogniteClient, name: str, code: str = HANDLER, external_id: str | None = None) -> Any:
    file_id = client.files.upload_bytes(zip_of({"handler.py": code}), name=f"{name}.zip").id
    return client.functions.create(name=name, external_id=external_id, file_id=file_id)


def wait_status(client: CogniteClient, function_id: int, timeout: float = 180) -> str:
    def done() -> str | None:
        fn = client.functions.retrieve(id=function_id)
        return fn.status if fn is not None and fn.status in ("Ready", "Failed") else None

    return str(wait_for(done, timeout=timeout, interval=0.2, what=f"function {function_id} built"))


def raw(client: CogniteClient, method: str, path: str, body: Any = None) -> Any:
    """fnhost's extensions (which the SDK has no methods for), with the SDK's own transport."""
    url = f"/api/v1/projects/{client.config.project}/functions/schedules{path}"
    if method == "GET":
        return client.get(url).json()
    return client.post(url, json=body).json()


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def creds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, dict[str, Any]]]:
    live = LiveServer(
        tmp_path_factory.mktemp("sched-home"),
        env={"FNHOST_SCHEDULER_SECONDS_CRON": "true", "FNHOST_MAX_SCHEDULES_PER_FUNCTION": "5"},
    ).start()
    yield live, live.create_client("scheduler-tests")
    live.stop()


@pytest.fixture(scope="module")
def live(creds: tuple[LiveServer, dict[str, Any]]) -> LiveServer:
    return creds[0]


@pytest.fixture(scope="module")
def client(creds: tuple[LiveServer, dict[str, Any]]) -> CogniteClient:
    return sdk_client(creds[1])


@pytest.fixture(scope="module")
def cc(creds: tuple[LiveServer, dict[str, Any]]) -> dict[str, str]:
    return {"client_id": creds[1]["client_id"], "client_secret": creds[1]["client_secret"]}


@pytest.fixture(scope="module")
def fn(client: CogniteClient) -> Any:
    return deploy(client, "scheduled", external_id="scheduled-fn")


# -- the seed's API through the SDK ---------------------------------------------------------
def test_create_list_retrieve_input_data_delete(client: CogniteClient, fn: Any, cc: dict[str, str]) -> None:
    # the user docs' example, verbatim but for the ids
    schedule = client.functions.schedules.create(
        name="my-schedule",
        cron_expression="0 0 * * *",
        function_id=fn.id,
        data={"assetNo": 0},
        client_credentials=cc,
    )
    assert isinstance(schedule, FunctionSchedule)
    assert schedule.name == "my-schedule" and schedule.function_id == fn.id
    assert schedule.cron_expression == "0 0 * * *" and schedule.when == "At 12:00 AM"
    assert isinstance(schedule.session_id, int)
    assert schedule.function_external_id is None  # never echoed when not sent

    # the bound session is a real, active session of the project
    sessions = client.iam.sessions.retrieve(id=[schedule.session_id])
    assert sessions[0].status == "ACTIVE"

    got = client.functions.schedules.retrieve(id=schedule.id)
    assert got is not None and got.dump() == schedule.dump()
    assert client.functions.schedules.get_input_data(id=schedule.id) == {"assetNo": 0}
    assert got.get_input_data() == {"assetNo": 0}
    write = got.as_write()
    assert write.data == {"assetNo": 0} and write.cron_expression == "0 0 * * *"

    listed = client.functions.schedules.list(function_id=fn.id, limit=None)
    assert schedule.id in [s.id for s in listed]
    assert [s.id for s in client.functions.schedules.list(name="my-schedule")] == [schedule.id]
    assert client.functions.schedules.list(cron_expression="1 2 3 4 5") == []
    assert schedule.id in [s.id for s in client.functions.schedules.list(function_external_id="scheduled-fn")]
    assert [s.id for s in fn.list_schedules(limit=-1)] == [s.id for s in listed]
    created = {"min": schedule.created_time, "max": schedule.created_time}
    assert schedule.id in [s.id for s in client.functions.schedules.list(created_time=created)]

    # retrieve several, unknown ids
    assert client.functions.schedules.retrieve(id=987654) is None
    many = client.functions.schedules.retrieve(id=[schedule.id, 987654], ignore_unknown_ids=True)
    assert [s.id for s in many] == [schedule.id]
    with pytest.raises(CogniteNotFoundError):
        client.functions.schedules.retrieve(id=[schedule.id, 987654])

    client.functions.schedules.delete(id=schedule.id)
    assert client.functions.schedules.retrieve(id=schedule.id) is None
    assert client.iam.sessions.retrieve(id=[schedule.session_id])[0].status == "REVOKED"


def test_create_with_nonce_and_without_data(client: CogniteClient, fn: Any) -> None:
    session = client.iam.sessions.create(session_type="ONESHOT_TOKEN_EXCHANGE")
    schedule = client.functions.schedules.create(
        FunctionScheduleWrite(name="nonce", function_id=fn.id, cron_expression="*/5 * * * *", nonce=session.nonce)
    )
    try:
        assert schedule.session_id == session.id
        assert schedule.when == "Every 5 minutes" and schedule.description is None
        assert client.functions.schedules.get_input_data(id=schedule.id) is None
        # a nonce binds once
        with pytest.raises(CogniteAPIError) as err:
            client.functions.schedules.create(
                FunctionScheduleWrite(name="again", function_id=fn.id, cron_expression="* * * * *", nonce=session.nonce)
            )
        assert err.value.code == 400 and "nonce has already been used" in err.value.message
    finally:
        client.functions.schedules.delete(id=schedule.id)


def test_create_by_function_external_id(client: CogniteClient, fn: Any) -> None:
    with pytest.warns(UserWarning, match="function_external_id"):
        schedule = client.functions.schedules.create(
            name="by-xid", cron_expression="@hourly", function_external_id="scheduled-fn", description="d"
        )
    try:
        assert schedule.function_id == fn.id and schedule.function_external_id is None
        assert schedule.description == "d" and schedule.when == "Every hour"
    finally:
        client.functions.schedules.delete(id=schedule.id)


def test_bad_input_gives_clear_errors(client: CogniteClient, fn: Any, cc: dict[str, str]) -> None:
    def create(**kw: Any) -> CogniteAPIError:
        args = {"name": "bad", "cron_expression": "0 0 * * *", "function_id": fn.id, "client_credentials": cc}
        with pytest.raises(CogniteAPIError) as err:
            client.functions.schedules.create(**{**args, **kw})
        return err.value

    e = create(cron_expression="61 * * * *")
    assert e.code == 400 and "minute 61 is outside 0-59" in e.message
    e = create(cron_expression="0 0 * *")
    assert e.code == 400 and "expected 5 fields" in e.message
    e = create(cron_expression="0 0 30 2 *")
    assert e.code == 400 and "never fires" in e.message
    e = create(function_id=123456789)
    assert isinstance(e, CogniteNotFoundError) and e.not_found == [{"id": 123456789}]
    # wrong client credentials fail already at POST /sessions (a 401, which the SDK reports
    # as lost project access)
    with pytest.raises(CogniteProjectAccessError):
        client.functions.schedules.create(
            name="bad", cron_expression="0 0 * * *", function_id=fn.id,
            client_credentials=ClientCredentials(cc["client_id"], "wrong-secret"))
    e = create(data=["not", "an", "object"])
    assert e.code == 400 and "data must be a JSON object" in e.message
    # unknown time zone (an extension, through the raw API)
    nonce = client.iam.sessions.create(ClientCredentials(cc["client_id"], cc["client_secret"])).nonce
    with pytest.raises(CogniteAPIError) as err:
        raw(client, "POST", "", {"items": [{"name": "tz", "functionId": fn.id, "cronExpression": "0 0 * * *",
                                            "timeZone": "Mars/Olympus_Mons", "nonce": nonce}]})
    assert err.value.code == 400 and "Unknown time zone 'Mars/Olympus_Mons'" in err.value.message
    # nothing was created by any of these
    assert client.functions.schedules.list(name="bad") == []
    assert client.functions.schedules.list(name="tz") == []


def test_limit_per_function(client: CogniteClient, cc: dict[str, str]) -> None:
    fn = deploy(client, "limited")
    ids = []
    try:
        for i in range(5):  # the server under test allows 5 per function
            ids.append(client.functions.schedules.create(
                name=f"s{i}", cron_expression="0 0 * * *", function_id=fn.id, client_credentials=cc).id)
        with pytest.raises(CogniteAPIError) as err:
            client.functions.schedules.create(
                name="one-too-many", cron_expression="0 0 * * *", function_id=fn.id, client_credentials=cc)
        assert err.value.code == 400 and "already has 5 schedules" in err.value.message
    finally:
        client.functions.delete(id=fn.id)
    # deleting the function deleted its schedules
    assert client.functions.schedules.retrieve(id=ids, ignore_unknown_ids=True) == []
    assert client.functions.schedules.list(function_id=fn.id) == []


def test_extensions_update_pause_resume_time_zone(client: CogniteClient, fn: Any, cc: dict[str, str]) -> None:
    s = client.functions.schedules.create(
        name="ext", cron_expression="30 2 * * *", function_id=fn.id, client_credentials=cc, data={"v": 1}
    )
    try:
        obj = raw(client, "GET", f"/{s.id}")
        assert obj["paused"] is False and "timeZone" not in obj
        assert len(obj["nextFireTimes"]) == 3
        first = datetime.fromtimestamp(obj["nextFireTimes"][0] / 1000, UTC)
        assert (first.hour, first.minute) == (2, 30)

        out = raw(client, "POST", "/update", {"items": [{"id": s.id, "update": {
            "cronExpression": {"set": "0 9 * * MON-FRI"}, "timeZone": {"set": "Europe/Oslo"},
            "data": {"set": {"v": 2}}, "description": {"set": "weekdays"}}}]})["items"][0]
        assert out["cronExpression"] == "0 9 * * MON-FRI" and out["timeZone"] == "Europe/Oslo"
        assert out["when"] == "At 09:00 AM, Monday through Friday (Europe/Oslo)"
        for ms in out["nextFireTimes"]:
            local = datetime.fromtimestamp(ms / 1000, zone("Europe/Oslo"))
            assert (local.hour, local.minute) == (9, 0) and local.weekday() < 5
        assert client.functions.schedules.get_input_data(id=s.id) == {"v": 2}
        # the SDK still loads it (unknown fields ignored) and sees the change
        got = client.functions.schedules.retrieve(id=s.id)
        assert got is not None and got.cron_expression == "0 9 * * MON-FRI" and got.description == "weekdays"

        paused = raw(client, "POST", f"/{s.id}/pause")["items"][0]
        assert paused["paused"] is True and paused["nextFireTimes"] == []
        resumed = raw(client, "POST", "/resume", {"items": [{"id": s.id}]})["items"][0]
        assert resumed["paused"] is False and len(resumed["nextFireTimes"]) == 3

        with pytest.raises(CogniteAPIError) as err:
            raw(client, "POST", "/update", {"items": [{"id": s.id, "update": {"cronExpression": {"set": "x"}}}]})
        assert err.value.code == 400 and "Invalid cron expression 'x'" in err.value.message
        with pytest.raises(CogniteAPIError) as err:
            raw(client, "POST", "/update", {"items": [{"id": s.id, "update": {"sessionId": {"set": 1}}}]})
        assert "cannot be updated" in err.value.message
    finally:
        client.functions.schedules.delete(id=s.id)


# -- cron ---------------------------------------------------------------------------------------
def utc(*a: int) -> datetime:
    return datetime(*a, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("0 0 * * *", utc(2024, 1, 1, 0, 0), utc(2024, 1, 2)),
        ("*/15 * * * *", utc(2024, 1, 1, 0, 7, 30), utc(2024, 1, 1, 0, 15)),
        ("0 9 * * MON-FRI", utc(2024, 1, 5, 10), utc(2024, 1, 8, 9)),
        ("0 0 13 * 5", utc(2024, 1, 6), utc(2024, 1, 12)),  # day-of-month OR Friday
        ("0 0 29 2 *", utc(2024, 3, 1), utc(2028, 2, 29)),
        ("0 12 * * 7", utc(2024, 1, 1), utc(2024, 1, 7, 12)),  # 7 is Sunday
        ("@monthly", utc(2024, 1, 15), utc(2024, 2, 1)),
    ],
)
def test_cron_next_after(expr: str, after: datetime, expected: datetime) -> None:
    assert parse(expr).next_after(after) == expected


def test_cron_dst_rules() -> None:
    oslo = zone("Europe/Oslo")

    def local(expr: str, start: datetime, n: int) -> list[str]:
        return [t.astimezone(oslo).strftime("%d %H:%M%z") for t in parse(expr).next_times(start, n, oslo)]

    # spring forward 2024-03-31 02:00 -> 03:00: a fixed time in the gap runs at the jump, once
    assert local("30 2 * * *", utc(2024, 3, 29, 12), 3) == ["30 02:30+0100", "31 03:00+0200", "01 02:30+0200"]
    # elapsed-time expressions skip the missing wall times
    assert local("*/30 * * * *", utc(2024, 3, 31, 0), 3) == ["31 01:30+0100", "31 03:00+0200", "31 03:30+0200"]
    # fall back 2024-10-27 03:00 -> 02:00: a fixed time runs once, on the first pass ...
    assert local("30 2 * * *", utc(2024, 10, 26, 12), 2) == ["27 02:30+0200", "28 02:30+0100"]
    # ... also when asked from inside the second pass
    assert local("45 2 * * *", utc(2024, 10, 27, 1, 10), 1) == ["28 02:45+0100"]
    # elapsed-time expressions run on both passes
    assert local("*/30 * * * *", utc(2024, 10, 27, 0, 10), 4) == [
        "27 02:30+0200", "27 02:00+0100", "27 02:30+0100", "27 03:00+0100"]


def test_cron_rejects_and_describes() -> None:
    for bad in ["", "* * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8",
                "*/0 * * * *", "5-1 * * * *", "@reboot", "* * * * * *"]:
        with pytest.raises(InvalidRequest):
            parse(bad)
    assert parse("*/10 * * * * *", allow_seconds=True).next_after(utc(2024, 1, 1, 0, 0, 5)) == utc(2024, 1, 1, 0, 0, 10)
    assert describe("*/5 * * * *") == "Every 5 minutes"
    assert describe("0 0 * * *", "Europe/Oslo") == "At 12:00 AM (Europe/Oslo)"
    with pytest.raises(InvalidRequest, match="Unknown time zone"):
        zone("Nowhere/Special")
    assert timedelta(0) == (utc(2024, 1, 1) - utc(2024, 1, 1))
