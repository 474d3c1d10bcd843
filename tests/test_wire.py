"""The CDF wire format, checked with raw HTTP where the SDK would hide the detail."""

from __future__ import annotations

import gzip
import json
from typing import Any

import httpx
import pytest
from cognite.client import CogniteClient
from cognite.client.exceptions import CogniteAPIError, CogniteProjectAccessError

from tests.live import LiveServer, bearer_token, token_client


def test_health_and_request_id(server: LiveServer) -> None:
    res = httpx.get(f"{server.base_url}/health")
    assert res.status_code == 200
    assert res.headers["x-request-id"]


def test_gzip_body_and_error_envelope(server: LiveServer, admin_creds: dict[str, Any]) -> None:
    token = bearer_token(admin_creds)
    url = f"{server.base_url}/api/v1/projects/{admin_creds['project']}/functions/byids"
    body = gzip.compress(json.dumps({"items": [{"id": 987654}]}).encode())
    res = httpx.post(
        url,
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert res.status_code == 400
    err = res.json()["error"]
    assert err["code"] == 400 and err["missing"] == [{"id": 987654}] and err["message"]
    assert res.headers["x-request-id"]


def test_corrupt_gzip_is_a_clear_400(server: LiveServer, admin_creds: dict[str, Any]) -> None:
    token = bearer_token(admin_creds)
    url = f"{server.base_url}/api/v1/projects/{admin_creds['project']}/functions/list"
    res = httpx.post(url, content=b"not gzip", headers={"Authorization": f"Bearer {token}", "Content-Encoding": "gzip"})
    assert res.status_code == 400
    assert "gzip" in res.json()["error"]["message"]


def test_missing_and_bad_tokens_are_401(server: LiveServer, admin_creds: dict[str, Any]) -> None:
    url = f"{server.base_url}/api/v1/projects/{admin_creds['project']}/functions/list"
    res = httpx.post(url, json={})
    assert res.status_code == 401 and "bearer" in res.json()["error"]["message"].lower()
    res = httpx.post(url, json={}, headers={"Authorization": "Bearer abc.def.ghi"})
    assert res.status_code == 401


def test_wrong_client_secret_is_refused(server: LiveServer, admin_creds: dict[str, Any]) -> None:
    res = httpx.post(
        admin_creds["token_url"],
        data={"grant_type": "client_credentials", "client_id": admin_creds["client_id"], "client_secret": "wrong"},
    )
    assert res.status_code == 401
    assert res.json()["error"] == "invalid_client"


def test_unknown_project_gives_project_access_error(server: LiveServer, admin_creds: dict[str, Any]) -> None:
    other = token_client(server.base_url, "no-such-project", bearer_token(admin_creds))
    with pytest.raises(CogniteProjectAccessError):
        other.functions.list()


def test_token_inspect(client: CogniteClient, admin_creds: dict[str, Any]) -> None:
    inspection = client.iam.token.inspect()
    assert inspection.subject == admin_creds["client_id"]
    assert admin_creds["project"] in [p.url_name for p in inspection.projects]


def test_unknown_route_is_wire_404(server: LiveServer, admin_creds: dict[str, Any]) -> None:
    res = httpx.get(f"{server.base_url}/api/v1/projects/x/nothing-here")
    assert res.status_code == 404
    assert res.json()["error"]["message"]


def test_function_not_found_returns_none(client: CogniteClient) -> None:
    assert client.functions.retrieve(id=123456789) is None
    assert client.functions.retrieve(external_id="does-not-exist") is None
    with pytest.raises(CogniteAPIError):
        client.functions.retrieve_multiple(ids=[123456789])
