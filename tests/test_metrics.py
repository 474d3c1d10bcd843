"""``GET /metrics``: Prometheus text that moves when things happen."""

from __future__ import annotations

import re
from typing import Any

import httpx
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
