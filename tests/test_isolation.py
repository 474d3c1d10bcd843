"""Isolation of function code from the server and from other functions, and per-call limits.

The attacks themselves (reading the server's files, another function's code and
environment, builds, the network) are in test_escape.py; this module checks the mechanisms.

Real servers, functions deployed and called with the official cognite-sdk. The server on
this host runs as root with bubblewrap installed, so ``auto`` isolation is ``bwrap``; one
test runs the same probe with isolation off, to show that the probe does find the files
when nothing stops it.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cognite.client import CogniteClient

from fnhost.run.abc import CallJob
from fnhost.run.local import LocalExecutor
from fnhost.run.sandbox import IsolationUnavailable, detect
from tests.live import UID_BASE, LiveServer, own_tmp_entries, wait_for

SNOOP = '''
import os

SERVER_FILES = ("fnhost.db", "jwt-signing.pem", "secrets.key", "admin-client.json")


def attempt(path, mode="read", size=64):
    try:
        if mode == "list":
            return "OK:" + ",".join(sorted(os.listdir(path))[:20])
        if mode == "write":
            with open(path, "w") as f:
                f.write("x")
            return "OK"
        with open(path, "rb") as f:
            return "OK:" + f.read(size).decode("latin-1")
    except Exception as exc:
        return type(exc).__name__


def handle(data, secrets, function_call_info):
    case = data["case"]
    if case == "who":
        return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "cwd": os.getcwd()}
    if case == "snoop":
        out = {"files": {p: attempt(p) for p in data["files"]}}
        out["dirs"] = {p: attempt(p, "list") for p in data["dirs"]}
        server = data["serverPid"]
        out["serverProc"] = {
            name: attempt(f"/proc/{server}/{name}") for name in ("environ", "cmdline", "status", "maps", "mem")
        }
        try:
            os.kill(server, 0)
            out["signalServer"] = "OK"
        except Exception as exc:
            out["signalServer"] = type(exc).__name__
        out["processes"] = {
            pid: attempt(f"/proc/{pid}/cmdline", size=1 << 16) for pid in os.listdir("/proc") if pid.isdigit()
        }
        found = []
        for root, dirs, files in os.walk("/"):
            if root in ("/proc", "/sys", "/dev", "/usr"):
                dirs[:] = []
                continue
            found += [os.path.join(root, f) for f in files if f in SERVER_FILES or f == data["marker"]]
        out["found"] = found
        out["writeCode"] = attempt(os.path.join(os.getcwd(), "planted.py"), "write")
        out["writeEtc"] = attempt("/etc/fnhost-planted", "write")
        return out
    if case == "tmp-write":
        for d in ("/tmp", "/dev/shm"):
            with open(os.path.join(d, f"left-by-{function_call_info['call_id']}"), "w") as f:
                f.write(secrets.get("mine", ""))
        return {"tmp": os.listdir("/tmp"), "shm": os.listdir("/dev/shm")}
    if case == "tmp-read":
        return {"tmp": os.listdir("/tmp"), "shm": os.listdir("/dev/shm")}
    if case == "sleep":
        import time
        time.sleep(data["seconds"])
        return "slept"
    return None
'''

LIMITS = '''
import os, time


def handle(data):
    case = data["case"]
    if case == "cpu":
        end = time.monotonic() + 30
        while time.monotonic() < end:
            pass
        return "spun"
    if case == "forks":
        kids = []
        try:
            for _ in range(50):
                pid = os.fork()
                if pid == 0:
                    time.sleep(3)
                    os._exit(0)
                kids.append(pid)
        except OSError as exc:
            return {"forked": len(kids), "error": type(exc).__name__}
        return {"forked": len(kids)}
    if case == "files":
        held = []
        try:
            for _ in range(500):
                held.append(open("/dev/null"))
        except OSError as exc:
            return {"opened": len(held), "error": type(exc).__name__}
        return {"opened": len(held)}
    if case == "bigfile":
        with open("/tmp/big", "wb") as f:
            for _ in range(data["mb"]):
                f.write(b"z" * 1024 * 1024)
        return "wrote"
    if case == "memory":
        blocks = []
        while True:
            blocks.append(bytearray(64 * 1024 * 1024))
    if case == "sleep":
        time.sleep(data["seconds"])
    return "ok"
'''


def deploy_folder(client: CogniteClient, folder: Path, name: str, files: dict[str, str], **kw: Any) -> Any:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (folder / rel).write_text(textwrap.dedent(text))
    fn = client.functions.create(name=name, folder=str(folder), **kw)
    wait_for(lambda: fn.update() or fn.status not in ("Queued", "Deploying"), timeout=300, what="deploy")
    assert fn.status == "Ready", fn.error
    return fn


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, CogniteClient]]:
    live = LiveServer(tmp_path_factory.mktemp("iso-home")).start()
    yield live, live.client(live.create_client("iso"))
    live.stop()


def snoop_data(live: LiveServer, victim_id: int) -> dict[str, Any]:
    home = live.home.resolve()
    assert live.proc is not None
    return {
        "case": "snoop",
        "files": [
            str(home / "fnhost.db"),
            str(home / "keys" / "jwt-signing.pem"),
            str(home / "keys" / "secrets.key"),
            str(home / "admin-client.json"),
            str(home / "code" / str(victim_id) / "handler.py"),
            str(home / "code" / str(victim_id) / "victim-marker.txt"),
            "/etc/shadow",
        ],
        "dirs": [str(home), str(home / "code"), str(home / "blobs")],
        "serverPid": live.proc.pid,
        "marker": "victim-marker.txt",
    }


def test_functions_run_as_their_own_unprivileged_uids(isolated: tuple[LiveServer, CogniteClient], tmp_path: Path) -> None:
    _, client = isolated
    one = deploy_folder(client, tmp_path / "one", "uid-one", {"handler.py": SNOOP})
    two = deploy_folder(client, tmp_path / "two", "uid-two", {"handler.py": SNOOP})
    a = one.call({"case": "who"}).get_response()
    b = two.call({"case": "who"}).get_response()
    assert a["uid"] not in (0, os.getuid()) and b["uid"] not in (0, os.getuid())
    assert a["uid"] != b["uid"] and a["groups"] == [] and a["cwd"] == "/function"
    assert a["uid"] == UID_BASE + one.id and a["gid"] == a["uid"]


def test_tmp_is_private_to_each_call(isolated: tuple[LiveServer, CogniteClient], tmp_path: Path) -> None:
    _, client = isolated
    fn = deploy_folder(client, tmp_path / "tmp", "tmp-private", {"handler.py": SNOOP}, secrets={"mine": "left-over"})
    first = fn.call({"case": "tmp-write"})
    assert first.status == "Completed", first.error
    wrote = first.get_response()
    assert own_tmp_entries(wrote["tmp"]) == [f"left-by-{first.id}"] and wrote["shm"] == [f"left-by-{first.id}"]
    # the next call, and calls running side by side, each start with empty ones
    with ThreadPoolExecutor(4) as pool:
        calls = list(pool.map(lambda _: fn.call({"case": "tmp-write"}), range(4)))
    for c in calls:
        seen = c.get_response()
        assert {**seen, "tmp": own_tmp_entries(seen["tmp"])} == {"tmp": [f"left-by-{c.id}"], "shm": [f"left-by-{c.id}"]}
    seen = fn.call({"case": "tmp-read"}).get_response()
    assert {**seen, "tmp": own_tmp_entries(seen["tmp"])} == {"tmp": [], "shm": []}


def test_without_isolation_the_same_probe_reads_the_server_files(start_server: Any, tmp_path: Path) -> None:
    """The control: the snoop's checks do fail when nothing isolates it."""
    live = start_server(env={"FNHOST_ISOLATION": "none"})
    assert "isolation none" in live.log()
    client = live.client(live.create_client("open"))
    victim = deploy_folder(client, tmp_path / "victim", "victim", {"handler.py": SNOOP, "victim-marker.txt": "victim's code"})
    snoop = deploy_folder(client, tmp_path / "snoop", "snoop", {"handler.py": SNOOP})
    seen = snoop.call(snoop_data(live, victim.id)).get_response()
    home = live.home.resolve()
    assert seen["files"][str(home / "fnhost.db")].startswith("OK:SQLite format 3")
    assert seen["files"][str(home / "code" / str(victim.id) / "victim-marker.txt")] == "OK:victim's code"
    assert seen["signalServer"] == "OK"


def test_limits_per_call(start_server: Any, tmp_path: Path) -> None:
    live = start_server(
        env={
            "FNHOST_CALL_CPU_SECONDS": "2",
            "FNHOST_CALL_MAX_PROCESSES": "6",
            "FNHOST_CALL_MAX_OPEN_FILES": "64",
            "FNHOST_CALL_MAX_FILE_BYTES": str(3 * 1024 * 1024),
            "FNHOST_CALL_TIMEOUT_SECONDS": "20",
        }
    )
    client = live.client(live.create_client("limits"))
    fn = deploy_folder(client, tmp_path / "limits", "limits", {"handler.py": LIMITS}, memory=0.25)

    cpu = fn.call({"case": "cpu"})
    assert cpu.status == "Failed"
    assert cpu.error["message"] == "The call used more than its 2 seconds of CPU time and was stopped."

    forks = fn.call({"case": "forks"}).get_response()
    assert forks["error"] == "BlockingIOError" and forks["forked"] < 6

    files = fn.call({"case": "files"}).get_response()
    assert files["error"] == "OSError" and files["opened"] < 64

    big = fn.call({"case": "bigfile", "mb": 5})
    assert big.status == "Failed" and "File too large" in big.error["message"]
    assert fn.call({"case": "bigfile", "mb": 2}).get_response() == "wrote"

    memory = fn.call({"case": "memory"})
    assert memory.status == "Failed" and "ran out of memory (limit 0.25 GB)" in memory.error["message"]

    wall = fn.call({"case": "sleep", "seconds": 60})
    assert wall.status == "Timeout" and "time limit of 20 seconds" in wall.error["message"]
    assert fn.call({"case": "sleep", "seconds": 0}).status == "Completed"


# -- the executor on its own -------------------------------------------------------------------

PYTHON = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python")


class _Env:
    hash = "iso-env"
    python = PYTHON
    site_dirs: list[str] = []


def test_stopping_the_executor_ends_every_sandbox(tmp_path: Path) -> None:
    code = tmp_path / "code" / "41"
    code.mkdir(parents=True)
    (code / "handler.py").write_text("import time\ndef handle():\n    time.sleep(60)\n")
    ex = LocalExecutor(isolation="bwrap")
    ex.start()
    try:
        assert ex.prepare(_Env(), code, "handler.py").ok
        future = ex.submit(CallJob(call_id=1, function_id=41, project="p", env=_Env(), code_dir=code, function_path="handler.py"))
        wait_for(lambda: ex.stats()["running"] == 1, what="the call to start")
        time.sleep(0.3)
        pids = _processes_of_uid(200_041)
        assert len(pids) >= 3  # env zygote, function zygote, the call
    finally:
        ex.stop()
    assert future.result(10).status == "Failed"
    wait_for(lambda: not _processes_of_uid(200_041), timeout=10, what="the sandbox to go")


def _processes_of_uid(uid: int) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) == uid and fields["State"].split()[0] != "Z":
            out.append(int(pid))
    return out


def test_detection_falls_back_and_refuses_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    assert detect("auto").mechanism == "bwrap"
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap to be found
    with pytest.raises(IsolationUnavailable, match="bubblewrap"):
        detect("bwrap")
    fallback = detect("auto")
    assert fallback.mechanism == "uid" and "not installed" in fallback.describe()
    assert detect("none").mechanism == "none"


def test_uid_isolation_protects_by_file_modes(tmp_path: Path) -> None:
    """Without namespaces (no bwrap): the data dir is closed by modes to the function's uid."""
    # a home every user may traverse, outside /tmp (which each call gets a private one of)
    base = Path("/var/tmp") / f"fnhost-uid-{os.getpid()}"
    home = base / "home"
    try:
        for d in (base, home, home / "code"):
            d.mkdir(exist_ok=True)
        base.chmod(0o755)
        home.chmod(0o711)
        (home / "code").chmod(0o711)
        (home / "fnhost.db").write_text("database")
        (home / "fnhost.db").chmod(0o600)
        mine, other = home / "code" / "51", home / "code" / "52"
        for d in (mine, other):
            d.mkdir()
            (d / "handler.py").write_text(
                "import os\ndef handle(data):\n"
                "    out = {'uid': os.getuid()}\n"
                "    for p in data['paths']:\n"
                "        try:\n            open(p).read(); out[p] = 'READ'\n"
                "        except OSError as e:\n            out[p] = type(e).__name__\n"
                "    return out\n"
            )
        system_python = subprocess.run(["/usr/bin/python3", "-c", "import sys; print(sys.executable)"],
                                       capture_output=True, text=True, check=True).stdout.strip()

        class SystemEnv:
            hash = "system"
            python = system_python
            site_dirs: list[str] = []

        ex = LocalExecutor(isolation="uid", hidden_paths=[str(home)])
        ex.start()
        try:
            assert ex.prepare(SystemEnv(), other, "handler.py").ok  # its code becomes its uid's
            paths = [str(home / "fnhost.db"), str(other / "handler.py"), str(mine / "handler.py")]
            out = ex.submit(CallJob(call_id=1, function_id=51, project="p", env=SystemEnv(), code_dir=mine,
                                    function_path="handler.py", data={"paths": paths})).result(60)
        finally:
            ex.stop()
        assert out.status == "Completed", out.error
        body = json.loads(out.response or "{}")
        assert body["uid"] == 200_051
        assert body[str(home / "fnhost.db")] == "PermissionError"
        assert body[str(other / "handler.py")] == "PermissionError"
        assert body[str(mine / "handler.py")] == "READ"
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)
