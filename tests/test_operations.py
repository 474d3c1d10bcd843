"""The operator procedures of docs/operations.md, done as the page says, on real servers."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from tests.live import wait_for


def handle(data, secrets):  # deployed with function_handle, so it must be named handle
    print("token is", secrets["token"])
    return {"token_ok": secrets["token"] == "backed-up-7", "data": data}


def test_online_backup_restores_functions_calls_and_secrets(start_server: Any, tmp_path: Path) -> None:
    home = tmp_path / "home"
    live = start_server(home=home)
    client = live.client(live.create_client("backup"))
    fn = client.functions.create(
        name="backed-up", external_id="backed-up", function_handle=handle, secrets={"token": "backed-up-7"}
    )
    wait_for(lambda: client.functions.retrieve(id=fn.id).status == "Ready", timeout=300, what="Ready")
    first = client.functions.call(id=fn.id, data={"n": 1})
    assert first.get_response() == {"token_ok": True, "data": {"n": 1}}

    # the backup of the page, taken while the server runs: database first, then blobs, keys
    backup = tmp_path / "backup"
    backup.mkdir()
    src, dst = sqlite3.connect(home / "fnhost.db"), sqlite3.connect(backup / "fnhost.db")
    src.backup(dst)
    dst.close()
    src.close()
    shutil.copytree(home / "blobs", backup / "blobs")
    shutil.copytree(home / "keys", backup / "keys")
    live.stop()

    # restore into a fresh data directory: no extracted code, no server.json
    restored = start_server(home=backup)
    assert restored.cli("admin", "check-secrets").returncode == 0
    again = restored.client(restored.create_client("after-restore"))
    assert again.functions.retrieve(external_id="backed-up").status == "Ready"
    old_call = again.functions.calls.retrieve(call_id=first.id, function_id=fn.id)
    assert old_call.status == "Completed" and old_call.get_response()["token_ok"] is True
    assert [line.message for line in old_call.get_logs()] == ["token is ***"]
    second = again.functions.call(id=fn.id, data={"n": 2})  # code made again from the zip
    assert second.status == "Completed", second.error
    assert second.get_response() == {"token_ok": True, "data": {"n": 2}}
