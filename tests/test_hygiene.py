"""Request hygiene against a live server: body size and JSON depth limits, gzip and zip bombs,
slow clients, and rate limits per principal (429, which the official SDK retries)."""

from __future__ import annotations

import gzip
import io
import json
import re
import socket
import zipfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from cognite.client import CogniteClient
from cognite.client.exceptions import CogniteAPIError

from tests.live import LiveServer, wait_for

ECHO = "def handle(data):\n    return data\n"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(
        tmp_path_factory.mktemp("hygiene"),
        env={
            "FNHOST_MAX_REQUEST_BYTES": "200000",
            "FNHOST_MAX_CODE_BYTES": "50000",
            "FNHOST_HTTP_HEADER_TIMEOUT_SECONDS": "1",
            "FNHOST_HTTP_BODY_IDLE_TIMEOUT_SECONDS": "1",
        },
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def creds(live: LiveServer) -> dict[str, Any]:
    return live.create_client("hygiene")


@pytest.fixture(scope="module")
def client(live: LiveServer, creds: dict[str, Any]) -> CogniteClient:
    return live.client(creds)


def token(creds: dict[str, Any]) -> str:
    res = httpx.post(
        creds["token_url"],
        data={"grant_type": "client_credentials", "client_id": creds["client_id"], "client_secret": creds["client_secret"]},
    )
    return str(res.json()["access_token"])


def post(live: LiveServer, creds: dict[str, Any], path: str, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{live.base_url}/api/v1/projects/{creds['project']}{path}",
        content=content,
        headers={"Authorization": f"Bearer {token(creds)}", "Content-Type": "application/json", **headers},
        timeout=30,
    )


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth - 1):
        value = [value] if i % 2 else {"down": value}
    return value


def test_body_size_limit_and_gzip_bomb(live: LiveServer, creds: dict[str, Any]) -> None:
    big = json.dumps({"items": [{"name": "x" * 250_000}]}).encode()
    res = post(live, creds, "/functions/byids", big)
    assert res.status_code == 413
    assert res.json()["error"]["message"] == "The request body is larger than 200000 bytes."

    bomb = gzip.compress(b"[" + b" " * (200 * 1024 * 1024) + b"]")  # 200 MB of spaces in ~200 KB
    assert len(bomb) < 400_000
    res = post(live, creds, "/functions/byids", bomb, **{"Content-Encoding": "gzip"})
    assert res.status_code == 413
    assert post(live, creds, "/functions/list", b"{}").status_code == 200


def test_json_depth_limit(live: LiveServer, creds: dict[str, Any], client: CogniteClient) -> None:
    deepest = b'{"filter": ' + b"[" * 90_000 + b"]" * 90_000 + b"}"  # deeper than json.dumps goes
    for body in (json.dumps({"filter": nested(101)}).encode(), deepest):
        res = post(live, creds, "/functions/list", body)
        assert res.status_code == 400
        assert res.json()["error"]["message"] == "The JSON body nests arrays and objects more than 100 levels deep."
    # brackets inside strings are text, not nesting
    flat = json.dumps({"filter": {"name": "[" * 5000}}).encode()
    assert post(live, creds, "/functions/list", flat).status_code == 200

    fn = client.functions.create(name="deep-echo", function_handle=handle)
    wait_for(lambda: fn.update() or fn.status not in ("Queued", "Deploying"), timeout=300, what="deploy")
    assert fn.status == "Ready", fn.error
    deep = {"v": nested(90)}  # within the limit (the call body adds two levels)
    assert fn.call(deep).get_response() == deep
    with pytest.raises(CogniteAPIError) as err:
        fn.call({"v": nested(150)})
    assert err.value.code == 400 and "more than 100 levels deep" in err.value.message


def handle(data):  # type: ignore[no-untyped-def]  # the SDK insists on the name
    return data


def _raw(live: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=20)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_slow_headers_are_cut_off_and_others_are_served(live: LiveServer) -> None:
    silent = _raw(live)  # connects, says nothing
    trickle = _raw(live)
    trickle.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never finishes
    assert httpx.get(f"{live.base_url}/health").status_code == 200  # served meanwhile
    for sock in (silent, trickle):
        answer = _read_all(sock)  # the server answers and closes (recv would block otherwise)
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout"), answer
        assert b"did not arrive within 1 seconds" in answer
        sock.close()


def test_slow_body_is_cut_off(live: LiveServer, creds: dict[str, Any]) -> None:
    sock = _raw(live)
    head = (
        f"POST /api/v1/projects/{creds['project']}/functions/list HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token(creds)}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"filter": ')  # and then nothing more
    answer = _read_all(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"The request body stopped arriving for 1 seconds." in answer


def test_many_idle_connections_do_not_stop_the_server(live: LiveServer) -> None:
    idle = [_raw(live) for _ in range(300)]
    try:
        assert httpx.get(f"{live.base_url}/health").status_code == 200
        for sock in idle:
            assert _read_all(sock).startswith(b"HTTP/1.1 408")
    finally:
        for sock in idle:
            sock.close()
    assert httpx.get(f"{live.base_url}/health").status_code == 200


def test_zip_whose_headers_lie_fails_the_deploy(client: CogniteClient) -> None:
    """Headers that understate an entry's size pass the checks at create; extraction, which
    counts the bytes it writes, stops it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("handler.py", ECHO)
        zf.writestr("data.bin", b"#" * 80_000)
    data = bytearray(buf.getvalue())
    cd = data.rfind(b"PK\x01\x02")  # the last central directory entry: data.bin
    data[cd + 24 : cd + 28] = (100).to_bytes(4, "little")  # declared size: 100 bytes
    file_id = client.files.upload_bytes(bytes(data), name="liar.zip").id
    fn = client.functions.create(name="liar", file_id=file_id)
    wait_for(lambda: fn.update() or fn.status not in ("Queued", "Deploying"), timeout=120, what="deploy")
    assert fn.status == "Failed"
    assert re.search(r"unpacks to more than 50000 bytes|could not be extracted", fn.error["message"]), fn.error


def test_rate_limit_per_principal_answers_429_and_the_sdk_retries(start_server: Any) -> None:
    # 20 requests in a row must come faster than the bucket refills (2 per second): within
    # 7.5 s, on one kept-alive connection, which holds on a busy machine too
    live = start_server(env={"FNHOST_RATE_LIMIT_PER_SECOND": "2", "FNHOST_RATE_LIMIT_BURST": "5"})
    creds = live.create_client("limited")
    other = live.create_client("other")
    bearer = token(creds)
    url = f"{live.base_url}/api/v1/projects/{creds['project']}/functions/list"
    with httpx.Client(headers={"Authorization": f"Bearer {bearer}"}) as http:
        answers = [http.post(url, json={}) for _ in range(20)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited and all(r.status_code in (200, 429) for r in answers)
    first = limited[0]
    assert first.headers["Retry-After"] == "1" and first.headers["cdf-is-auto-retryable"] == "true"
    message = first.json()["error"]["message"]
    assert message.startswith("Too many requests: at most 2 per second (bursts of 5) per principal.")
    # another principal is not held back by this one
    assert httpx.post(url, json={}, headers={"Authorization": f"Bearer {token(other)}"}).status_code == 200

    # the SDK retries 429s by itself: every one of its requests succeeds
    client = live.client(creds)
    before = _rate_limited_count(live)
    for _ in range(20):
        assert client.functions.list(limit=1) is not None
    assert _rate_limited_count(live) > before  # ...and it did meet the limit


def _rate_limited_count(live: LiveServer) -> float:
    text = httpx.get(f"{live.base_url}/metrics").text
    match = re.search(r"^fnhost_rate_limited_total (\S+)$", text, re.M)
    assert match, text[:500]
    return float(match.group(1))


def test_server_still_serves_after_all_that(client: CogniteClient) -> None:
    assert [f.name for f in client.functions.list(name="deep-echo")] == ["deep-echo"]


def test_ids_out_of_range_are_a_clear_400(live: LiveServer, creds: dict[str, Any]) -> None:
    """Found by the fuzzer (test_fuzz.py): ids past 64 bits were a 500."""
    huge = 2**70
    for path, body in (
        ("/functions/byids", {"items": [{"id": huge}]}),
        ("/assets/byids", {"items": [{"id": huge}]}),
        (f"/functions/{huge}/calls/list", {}),
    ):
        res = post(live, creds, path, json.dumps(body).encode())
        assert res.status_code == 400, (path, res.text)
        # a body's id is refused by its model (naming the bound), a path's by the route
        assert re.search(r"out of range|must be at most 9223372036854775807", res.json()["error"]["message"])
    res = httpx.get(
        f"{live.base_url}/api/v1/projects/{creds['project']}/functions/1/calls/{huge}",
        headers={"Authorization": f"Bearer {token(creds)}"},
    )
    assert res.status_code == 400 and "out of range" in res.json()["error"]["message"]
