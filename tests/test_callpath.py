"""The call path's requests, which ``api/callpath.py`` routes itself, answer as FastAPI's
routes do: same endpoints, same checks, same wire errors; what its patterns do not take
still reaches FastAPI."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
from fastapi.routing import APIRoute

from fnhost.api import calls, sessions
from fnhost.api.callpath import FAST_ROUTES
from tests.live import LiveServer, bearer_token


def test_each_fast_route_is_a_fastapi_route_with_the_same_endpoint() -> None:
    declared = {
        (method, route.path): route.endpoint
        for router in (sessions.router, calls.router)
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    for fast in FAST_ROUTES:
        assert declared.get((fast.method, fast.path)) is fast.endpoint, fast.path
        sample = "/api/v1/projects/p-1" + fast.path.replace("{function_id}", "12").replace("{call_id}", "34")
        match = fast.pattern.fullmatch(sample)
        assert match is not None, sample
        assert {k: v for k, v in fast.params(match).items() if k != "project"} == {
            k: v for k, v in {"function_id": 12, "call_id": 34}.items() if "{" + k + "}" in fast.path
        }
        assert fast.pattern.fullmatch(sample + "/") is None  # a trailing slash is FastAPI's


def test_fast_routes_refuse_requests_without_a_valid_token(server: LiveServer, admin_creds: dict[str, Any]) -> None:
    prefix = f"{server.base_url}/api/v1/projects/{admin_creds['project']}"
    for method, path, body in [
        ("POST", "/sessions", {"items": [{"tokenExchange": True}]}),
        ("POST", "/functions/1/call", {"data": {}}),
        ("GET", "/functions/1/calls/1/response", None),
    ]:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            res = httpx.request(method, prefix + path, json=body, headers=headers)
            assert res.status_code == 401, (path, res.text)
            assert res.json()["error"]["code"] == 401 and res.headers["x-request-id"]


def test_fast_routes_keep_the_wire_middleware_and_its_errors(server: LiveServer, admin_creds: dict[str, Any]) -> None:
    auth = {"Authorization": f"Bearer {bearer_token(admin_creds)}"}
    prefix = f"{server.base_url}/api/v1/projects/{admin_creds['project']}"
    # a gzip body is inflated before the endpoint reads it
    res = httpx.post(
        prefix + "/sessions",
        content=gzip.compress(json.dumps({"items": [{"tokenExchange": True}]}).encode()),
        headers={**auth, "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert res.status_code == 200, res.text
    assert res.json()["items"][0]["nonce"] and res.headers["x-request-id"]
    # a body nested too deep is refused before it is parsed
    deep = "[" * 1000 + "]" * 1000
    res = httpx.post(prefix + "/functions/1/call", content=deep, headers=auth)
    assert res.status_code == 400 and "levels deep" in res.json()["error"]["message"]
    # a domain error is the wire envelope, with what it carries (missing)
    res = httpx.post(prefix + "/functions/987654/call", json={"data": {}}, headers=auth)
    err = res.json()["error"]
    assert res.status_code == err["code"] and 400 <= err["code"] < 500 and err["message"], res.text
    res = httpx.get(prefix + "/functions/987654/calls/1/response", headers=auth)
    err = res.json()["error"]
    assert res.status_code == err["code"] and 400 <= err["code"] < 500 and err["message"], res.text
    # not JSON: the endpoint's own message
    res = httpx.post(prefix + "/sessions", content=b"{nope", headers=auth)
    assert res.status_code == 400 and "not valid JSON" in res.json()["error"]["message"]


def test_what_the_patterns_do_not_take_gets_fastapi_s_answer(server: LiveServer, admin_creds: dict[str, Any]) -> None:
    auth = {"Authorization": f"Bearer {bearer_token(admin_creds)}"}
    prefix = f"{server.base_url}/api/v1/projects/{admin_creds['project']}"
    res = httpx.post(prefix + "/functions/abc/call", json={"data": {}}, headers=auth)
    assert res.status_code == 400, res.text
    assert "function_id" in res.json()["error"]["message"]
    res = httpx.get(prefix + "/functions/1/calls/abc/response", headers=auth)
    assert res.status_code == 400 and "call_id" in res.json()["error"]["message"], res.text
