"""Faults: the server killed with SIGKILL mid-call and mid-build, a full disk, an unreachable
package index. Real servers and the official cognite-sdk; the server is killed alone (as
the kernel's OOM killer would), not its process group.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cognite.client import CogniteClient

from fnhost.build.envs import _uv_summary
from tests.live import UID_BASE, LiveServer, free_port, wait_for

SLEEPER = "import time\n\ndef handle(data):\n    time.sleep(data.get('seconds', 0))\n    return 'done'\n"
# a module whose import (the last step of a build) takes a while
SLOW_IMPORT = "import time\ntime.sleep(12)\n\ndef handle(data):\n    return 'imported'\n"
GOOD = "def handle(data):\n    return data\n"


def zip_of(files: dict[str, str | bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def deploy(client: CogniteClient, name: str, files: dict[str, str | bytes], **kw: Any) -> Any:
    file_id = client.files.upload_bytes(zip_of(files), name=f"{name}.zip").id
    return client.functions.create(name=name, file_id=file_id, **kw)


def settled(fn: Any, timeout: float = 300) -> Any:
    wait_for(lambda: fn.update() or fn.status not in ("Queued", "Deploying"), timeout=timeout, what="deploy")
    return fn


def kill9(live: LiveServer) -> None:
    """SIGKILL the server process only; its sandboxes must go by themselves."""
    assert live.proc is not None
    os.kill(live.proc.pid, signal.SIGKILL)
    live.proc.wait(10)


def uid_processes(uid: int) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and fields["State"].split()[0] != "Z":
                found.append(int(pid))
    return found


def test_kill9_while_calls_run_and_wait(start_server: Any) -> None:
    # a uid range of its own: other servers of the test run have functions with the same ids
    base = UID_BASE + 110_000
    live = start_server(env={"FNHOST_MAX_RUNNING_CALLS_PER_FUNCTION": "2", "FNHOST_ISOLATION_UID_BASE": str(base)})
    client = live.client(live.create_client("faults"))
    fn = settled(deploy(client, "sleeper", {"handler.py": SLEEPER}))
    assert fn.status == "Ready", fn.error
    calls = [fn.call({"seconds": 60}, wait=False) for _ in range(5)]  # 2 run, 3 wait their turn
    uid = base + fn.id
    wait_for(lambda: len(uid_processes(uid)) >= 4, what="two calls running in the sandbox")

    kill9(live)
    wait_for(lambda: not uid_processes(uid), timeout=20, what="the sandbox to die with the server")

    live.start()
    client = live.client(live.create_client("faults-after"))
    for call in calls:
        after = client.functions.calls.retrieve(function_id=fn.id, call_id=call.id)
        assert after.status == "Failed"
        assert after.error["message"] == "The server running this call stopped before the call ended."
        assert after.end_time is not None and after.end_time >= after.start_time
    assert "failed 5 call(s) left Running by stopped replica(s)" in live.log()
    # and it serves calls again
    assert client.functions.retrieve(id=fn.id).call({"seconds": 0}).get_response() == "done"


def test_kill9_while_a_deploy_builds(start_server: Any) -> None:
    base = UID_BASE + 120_000
    live = start_server(env={"FNHOST_ISOLATION_UID_BASE": str(base)})
    client = live.client(live.create_client("builds"))
    fn = deploy(client, "slow-import", {"handler.py": SLOW_IMPORT})
    # the import check runs in the function's sandbox: its processes show the build is under way
    wait_for(lambda: uid_processes(base + fn.id), timeout=120, what="the build's import check")
    fn.update()
    assert fn.status == "Deploying"
    kill9(live)

    live.start()
    client = live.client(live.create_client("builds-after"))
    again = settled(client.functions.retrieve(id=fn.id), timeout=120)
    assert again.status == "Ready", again.error
    assert f"function {fn.id}: its build was interrupted" in live.log()
    assert again.call({}).get_response() == "imported"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Any]:
    """Mount small tmpfs file systems (a full disk on demand); unmounted after the test."""
    mounted: list[Path] = []

    def mount(name: str, size: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small file system here: {result.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def test_a_build_error_keeps_its_root_cause() -> None:
    """uv's cause chain varies with where the disk filled up; its last line (the root cause)
    stays in the message however long the chain (the full-disk tests below rely on it)."""
    output = (
        "Resolved 20 packages in 1.2s\n"
        "error: Failed to install: pip-26.3-py3-none-any.whl (pip==26.3)\n"
        "  cause: Failed to copy to `/envs/.tmp-base/site-packages/pip/_vendor/distro/LICENSE`\n"
        "  cause: failed to copy file from /cache/LICENSE to /envs/.tmp-base/pip/_vendor/distro/.tmpoA8wVu:\n"
        "  No space left on device (os error 28)\n"
    )
    assert _uv_summary(output) == (
        "error: Failed to install: pip-26.3-py3-none-any.whl (pip==26.3) "
        "cause: Failed to copy to `/envs/.tmp-base/site-packages/pip/_vendor/distro/LICENSE` "
        "cause: failed to copy file from /cache/LICENSE to /envs/.tmp-base/pip/_vendor/distro/.tmpoA8wVu: "
        "No space left on device (os error 28)"
    )
    longer = "\u00d7 Failed to build `x`\n├─▶ one\n├─▶ two\n├─▶ three\n╰─▶ the root\nhint: try this\n"
    assert _uv_summary(longer) == "Failed to build `x` one two … the root"


def test_full_disk_for_environments_fails_the_deploy_clearly(start_server: Any, small_disk: Any) -> None:
    envs = small_disk("envs", "16m")  # the baseline (cognite-sdk and friends) needs more
    live = start_server(env={"FNHOST_ENV_DIR": str(envs)})
    client = live.client(live.create_client("full"))
    fn = settled(deploy(client, "no-room", {"handler.py": GOOD}))
    assert fn.status == "Failed"
    assert "No space left on device" in fn.error["message"], fn.error
    # the server keeps serving
    assert client.functions.retrieve(id=fn.id).status == "Failed"


def test_full_disk_for_code_fails_the_deploy_clearly_and_recovers(start_server: Any, small_disk: Any) -> None:
    home = small_disk("home", "48m")
    live = start_server(home=home)
    client = live.client(live.create_client("full-code"))
    code = zip_of({"handler.py": GOOD, "data.bin": os.urandom(6 * 1024 * 1024)})
    file_id = client.files.upload_bytes(code, name="big-code.zip").id
    # fill the disk, leaving less room than the code unpacks to
    stat = os.statvfs(home)
    filler = home / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (stat.f_bavail * stat.f_frsize - 3 * 1024 * 1024))
    fn = settled(client.functions.create(name="no-room-for-code", file_id=file_id))
    assert fn.status == "Failed"
    assert "could not be extracted" in fn.error["message"] and "No space left on device" in fn.error["message"]

    filler.unlink()
    again = settled(client.functions.create(name="room-again", file_id=file_id))
    assert again.status == "Ready", again.error
    assert again.call({"x": 1}).get_response() == {"x": 1}


def test_unreachable_package_index_fails_the_deploy_clearly(start_server: Any) -> None:
    live = start_server()
    client = live.client(live.create_client("index"))
    closed = f"http://127.0.0.1:{free_port()}/simple"  # nothing listens there
    fn = settled(
        deploy(client, "no-index", {"handler.py": GOOD, "requirements.txt": "fnhost-anything==1.0\n"}, index_url=closed)
    )
    assert fn.status == "Failed"
    message = fn.error["message"]
    assert message.startswith("Installing requirements.txt failed:"), message
    assert "127.0.0.1" in message or "127.0.0.1" in fn.error["trace"]
    assert "onnect" in message or "onnect" in fn.error["trace"]  # (c|C)onnection refused / failed to connect
