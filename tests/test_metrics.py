"""``GET /metrics``: Prometheus text that moves when things happen."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cognite.client import CogniteClient

from tests.live import LiveServer


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


def scrape(server: LiveServer, **kw: Any) -> str:
    r = httpx.get(f"{server.base_url}/metrics", **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def test_metrics_are_served_in_prometheus_format(server: LiveServer) -> None:
    text = scrape(server)
    for family in (
        "fnhost_calls_total",
        "fnhost_call_duration_seconds",
        "fnhost_call_queue_wait_seconds",
        "fnhost_deploy_duration_seconds",
        "fnhost_scheduler_lag_seconds",
        "fnhost_zygote_cache_total",
        "fnhost_environment_cache_total",
    ):
        assert f"# TYPE {family.removesuffix('_total')}" in text, family


def test_metrics_token_guards_the_endpoint(start_server: Any) -> None:
    live = start_server(env={"FNHOST_METRICS_TOKEN": "scrape-me"})
    assert httpx.get(f"{live.base_url}/metrics").status_code == 401
    assert httpx.get(f"{live.base_url}/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    scrape(live, headers={"Authorization": "Bearer scrape-me"})


def test_deploy_moves_the_deploy_metrics(server: LiveServer, client: CogniteClient) -> None:
    before = scrape(server)

    def handle(data):
        return data

    fn = client.functions.create(name="metrics-deploy", function_handle=handle)
    from tests.live import wait_for

    wait_for(lambda: client.functions.retrieve(id=fn.id).status in ("Ready", "Failed"), timeout=300)
    after = scrape(server)
    assert sample(after, "fnhost_deploys_total", status="Ready") == sample(before, "fnhost_deploys_total", status="Ready") + 1
    assert sample(after, "fnhost_deploy_duration_seconds_count", status="Ready") >= 1
    env_lookups = sum(sample(after, "fnhost_environment_cache_total", result=r) for r in ("hit", "miss"))
    assert env_lookups >= 1
    client.functions.delete(id=fn.id)


def handle(data):  # the SDK's function_handle must be named handle
    if data.get("fail"):
        raise ValueError("asked to fail")
    return data


def test_calls_move_the_call_metrics(server: LiveServer, client: CogniteClient) -> None:
    from tests.live import wait_for

    fn = client.functions.create(name="metrics-calls", function_handle=handle)
    wait_for(lambda: client.functions.retrieve(id=fn.id).status == "Ready", timeout=300)
    fid = str(fn.id)
    before = scrape(server)
    assert client.functions.call(id=fn.id, data={"n": 1}).status == "Completed"
    assert client.functions.call(id=fn.id, data={"n": 2}).status == "Completed"
    assert client.functions.call(id=fn.id, data={"fail": True}).status == "Failed"
    after = scrape(server)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    # by function and status
    # (with the project: another project's deleted function may have had the same id)
    project = client.config.project
    assert moved("fnhost_calls_started_total", project=project, function_id=fid) == 3
    assert moved("fnhost_calls_total", project=project, function_id=fid, status="Completed") == 2
    assert moved("fnhost_calls_total", project=project, function_id=fid, status="Failed") == 1
    # the histograms are per replica (not per function): they moved at least by these calls
    assert moved("fnhost_call_duration_seconds_count", status="Completed") >= 2
    assert moved("fnhost_call_duration_seconds_count", status="Failed") >= 1
    assert moved("fnhost_call_queue_wait_seconds_count") >= 3
    # every call forked a zygote; the deploy's import check left this function's one warm
    assert moved("fnhost_zygote_cache_total", result="hit") + moved("fnhost_zygote_cache_total", result="miss") >= 3
    assert moved("fnhost_zygote_cache_total", result="hit") >= 1
    client.functions.delete(id=fn.id)


# -- a server with the seconds cron (so schedules fire at once) and JSON logs ------------------
@pytest.fixture(scope="module")
def ops_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path_factory.mktemp("ops-home"),
        env={"FNHOST_SCHEDULER_SECONDS_CRON": "true", "FNHOST_LOG_FORMAT": "json"},
    ).start()
    yield live
    live.stop()


def test_schedule_fires_move_the_scheduler_metrics(ops_server: LiveServer) -> None:
    from tests.live import wait_for

    client = ops_server.client(ops_server.create_client("ops"))
    fn = client.functions.create(name="metrics-scheduled", function_handle=handle)
    wait_for(lambda: client.functions.retrieve(id=fn.id).status == "Ready", timeout=300)
    before = scrape(ops_server)
    assert sample(before, "fnhost_schedule_fires_total") == 0
    schedule = client.functions.schedules.create(
        name="every-second", cron_expression="* * * * * *", function_id=fn.id, data={"n": 1}
    )

    def fired_twice() -> str | None:
        text = scrape(ops_server)
        return text if sample(text, "fnhost_schedule_fires_total") >= 2 else None

    try:
        after = wait_for(fired_twice, timeout=60, what="two scheduled fires")
    finally:
        client.functions.schedules.delete(id=schedule.id)
    fires = sample(after, "fnhost_schedule_fires_total")
    assert sample(after, "fnhost_scheduler_lag_seconds_count") == fires
    assert sample(after, "fnhost_calls_started_total", function_id=str(fn.id)) >= fires


def test_json_server_logs_are_one_object_per_line(ops_server: LiveServer) -> None:
    """FNHOST_LOG_FORMAT=json: every line a log collector reads parses, and no secret is in them."""
    from tests.live import wait_for

    client = ops_server.client(ops_server.create_client("logs"))
    fn = client.functions.create(name="logged", function_handle=handle)
    wait_for(lambda: f"function {fn.id} ready" in ops_server.log(), timeout=300, what="the build's log line")
    lines = [line for line in ops_server.log().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record), record
        assert "color_message" not in record
    messages = [r["message"] for r in records]
    assert any(m.startswith("Uvicorn running on") for m in messages)
    assert any(f"function {fn.id} ready" in m for m in messages)
    # the first admin client is announced with where its credentials are, never its secret
    admin = json.loads((ops_server.home / "admin-client.json").read_text())
    assert any(admin["client_id"] in m and "admin-client.json" in m for m in messages)
    assert admin["client_secret"] not in ops_server.log()
