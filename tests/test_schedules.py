"""Schedules through the official cognite-sdk, the scheduler on real servers, and cron.

Fast tests use a server with the seconds-resolution cron extension
(``FNHOST_SCHEDULER_SECONDS_CRON``, a testing aid) so a schedule fires within seconds;
the wire and bad-input tests use standard 5-field expressions as users write them.
"""

from __future__ import annotations

import io
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
from cognite.client.exceptions import (
    CogniteAPIError,
    CogniteNotFoundError,
    CogniteProjectAccessError,
)

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


# -- the scheduler, for real ----------------------------------------------------------------------
def schedule_calls(client: CogniteClient, function_id: int, schedule_id: int) -> list[Any]:
    return list(client.functions.calls.list(function_id=function_id, schedule_id=schedule_id, limit=None))


def test_a_schedule_fires_for_real(client: CogniteClient, fn: Any, cc: dict[str, str]) -> None:
    assert wait_status(client, fn.id) == "Ready"
    s = client.functions.schedules.create(
        name="every-2s", cron_expression="*/2 * * * * *", function_id=fn.id,
        client_credentials=cc, data={"assetNo": 7},
    )
    try:
        calls = wait_for(lambda: [c for c in schedule_calls(client, fn.id, s.id) if c.status != "Running"],
                         timeout=60, what="a scheduled call to end")
    finally:
        client.functions.schedules.delete(id=s.id)
    call = calls[0]
    assert call.status == "Completed", call.error
    assert call.schedule_id == s.id
    assert call.scheduled_time % 2000 == 0
    assert 0 <= call.start_time - call.scheduled_time < 2000
    response = call.get_response()
    assert response["data"] == {"assetNo": 7}
    info = response["info"]
    assert info["function_id"] == fn.id and info["call_id"] == call.id
    assert info["schedule_id"] == s.id and info["scheduled_time"] == call.scheduled_time
    # deleted: it fires no more
    time.sleep(0.5)
    before = len(schedule_calls(client, fn.id, s.id))
    time.sleep(2.5)
    assert len(schedule_calls(client, fn.id, s.id)) == before


def test_revoked_session_gives_failed_calls_and_others_keep_firing(
    client: CogniteClient, fn: Any, cc: dict[str, str]
) -> None:
    assert wait_status(client, fn.id) == "Ready"
    bad = client.functions.schedules.create(
        name="revoked", cron_expression="* * * * * *", function_id=fn.id, client_credentials=cc)
    good = client.functions.schedules.create(
        name="healthy", cron_expression="* * * * * *", function_id=fn.id, client_credentials=cc)
    try:
        client.iam.sessions.revoke(id=bad.session_id)
        failed = wait_for(
            lambda: [c for c in schedule_calls(client, fn.id, bad.id) if c.status == "Failed"
                     and f"session {bad.session_id}" in c.error["message"]],
            timeout=30, what="a Failed call of the revoked schedule")
        assert "revoked" in failed[0].error["message"]
        n = len(schedule_calls(client, fn.id, good.id))
        wait_for(lambda: len([c for c in schedule_calls(client, fn.id, good.id) if c.status == "Completed"]) > n,
                 timeout=30, what="the healthy schedule to keep firing")
        fires = raw(client, "GET", f"/{bad.id}/fires")["items"]
        assert fires and fires[0]["outcome"] == "failed" and "revoked" in fires[0]["message"]
    finally:
        client.functions.schedules.delete(id=bad.id)
        client.functions.schedules.delete(id=good.id)


def test_failed_function_cannot_be_scheduled(client: CogniteClient, cc: dict[str, str]) -> None:
    broken = deploy(client, "broken", code="import fnhost_no_such_module\n\ndef handle():\n    return 1\n")
    try:
        assert wait_status(client, broken.id) == "Failed"
        with pytest.raises(CogniteAPIError) as err:
            client.functions.schedules.create(
                name="x", cron_expression="0 0 * * *", function_id=broken.id, client_credentials=cc)
        assert err.value.code == 400 and f"Function {broken.id} is Failed" in err.value.message
    finally:
        client.functions.delete(id=broken.id)


def _db_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql))


def test_two_servers_on_one_database_fire_each_due_time_once(start_server: Any, tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    env = {
        "FNHOST_DATABASE_URL": f"sqlite:///{db}",
        "FNHOST_BLOB_STORE": "database",
        "FNHOST_SCHEDULER_SECONDS_CRON": "true",
    }
    a = start_server(env=env, home=tmp_path / "a")
    # the same keys, so that either replica can mint tokens for the schedule's session
    import shutil

    shutil.copytree(a.home / "keys", tmp_path / "b" / "keys")
    b = start_server(env=env, home=tmp_path / "b")
    client = sdk_client(a.create_client("replicas"))
    creds = {"client_id": client.config.credentials.client_id,
             "client_secret": client.config.credentials.client_secret}
    fn = deploy(client, "replicated")
    assert wait_status(client, fn.id) == "Ready"
    schedules = [client.functions.schedules.create(
        name=f"r{i}", cron_expression="* * * * * *", function_id=fn.id, client_credentials=creds)
        for i in range(3)]
    time.sleep(8)
    # read the fire history before the delete, which removes it with the schedules
    fires = _db_rows(db, "SELECT schedule_id, scheduled_time, replica, outcome FROM schedule_fires")
    for s in schedules:
        client.functions.schedules.delete(id=s.id)
    assert b.proc is not None and b.proc.poll() is None
    calls = _db_rows(db, "SELECT schedule_id, scheduled_time FROM calls WHERE schedule_id IS NOT NULL")
    assert len(calls) >= 3 * 5
    assert len(set(calls)) == len(calls), "a due time was fired twice"
    for s in schedules:
        times = sorted(t for sid, t in calls if sid == s.id)
        assert times == list(range(times[0], times[-1] + 1000, 1000)), "a due time was skipped"
    assert len({r[2] for r in fires}) == 2, "both replicas should have taken part"


def test_restart_across_due_times_follows_the_missed_run_policy(start_server: Any, tmp_path: Path) -> None:
    live = start_server(env={"FNHOST_SCHEDULER_SECONDS_CRON": "true",
                             "FNHOST_SCHEDULER_MISSED_RUN_GRACE_SECONDS": "60"})
    client = sdk_client(live.create_client("restart"))
    creds = {"client_id": client.config.credentials.client_id,
             "client_secret": client.config.credentials.client_secret}
    fn = deploy(client, "restarted")
    assert wait_status(client, fn.id) == "Ready"
    s = client.functions.schedules.create(
        name="every-2s", cron_expression="*/2 * * * * *", function_id=fn.id, client_credentials=creds)
    wait_for(lambda: schedule_calls(client, fn.id, s.id), timeout=30, what="a first call")

    # 1. down for ~6 s, less than the grace window: one catch-up run, the rest recorded missed
    live.stop()
    time.sleep(6)
    live.start()
    up_at = int(time.time() * 1000)
    last_before = max(c.scheduled_time for c in schedule_calls(client, fn.id, s.id))
    obj = wait_for(lambda: (o := raw(client, "GET", f"/{s.id}"))["missedRuns"] > 0 and o, timeout=30,
                   what="missed runs to be recorded")
    fires = raw(client, "GET", f"/{s.id}/fires")["items"]
    missed = [f for f in fires if f["outcome"] == "missed"]
    assert len(missed) == 1 and missed[0]["count"] == obj["missedRuns"]
    catch_up = [f for f in fires if f["outcome"] == "called" and f["scheduledTime"] > missed[0]["scheduledTime"]]
    assert catch_up, fires
    first_after = min(f["scheduledTime"] for f in catch_up)
    calls = {c.scheduled_time: c for c in schedule_calls(client, fn.id, s.id)}
    # the catch-up was due while the server was down (it ran once; the accounting is below)
    assert first_after < up_at
    # every due time in the outage is accounted for: missed ones plus the one catch-up
    called_before = sorted(t for t in calls if t < first_after)
    outage = (first_after - called_before[-1]) // 2000 - 1
    assert outage == obj["missedRuns"] >= 2

    # 2. down again with a grace window shorter than the outage: nothing runs late
    live.stop()
    live.env["FNHOST_SCHEDULER_MISSED_RUN_GRACE_SECONDS"] = "0.3"
    time.sleep(5)
    restarted = int(time.time() * 1000)
    live.start()
    wait_for(lambda: raw(client, "GET", f"/{s.id}")["missedRuns"] > obj["missedRuns"] + 1, timeout=30,
             what="the second outage's missed runs")
    time.sleep(2.5)
    late = [c for c in schedule_calls(client, fn.id, s.id)
            if c.scheduled_time < restarted and c.scheduled_time > last_before + 2000 * (outage + 1)]
    assert [c.scheduled_time for c in late] == [], "a due time older than the grace window ran"
    every = schedule_calls(client, fn.id, s.id)  # one read: the schedule keeps firing
    assert len({c.scheduled_time for c in every}) == len(every), "a due time ran twice"
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
