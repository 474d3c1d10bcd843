"""Executor contract: what every backend must do with a call. Runs the real executors (the
local one, and the Ray one on a local Ray cluster) against this project's own Python (which
has cognite-sdk), with handler code in temp dirs. Tests marked local-only or ray-only say why.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fnhost.run.abc import CallJob, CallLimits, CallOutcome, Executor
from fnhost.run.local import LocalExecutor
from tests.live import own_tmp_entries
from tests.raycluster import alive

T = TypeVar("T")

PYTHON = str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python")


@dataclass(frozen=True)
class Env:
    hash: str
    python: str
    site_dirs: list[str] = field(default_factory=list)


ENV = Env("test-env", PYTHON)

HANDLER = '''
import contextlib, json, logging, os, sys, time
STATE = {"calls": 0}

def handle(data, secrets, function_call_info):
    STATE["calls"] += 1
    case = data.get("case")
    if case == "echo":
        print("hello", secrets["token"])
        print("to stderr", file=sys.stderr)
        logging.getLogger("mine").warning("a log record")
        return {"data": data, "info": function_call_info, "env": os.environ.get("MY_VAR"),
                "files": sorted(os.listdir(".")), "calls": STATE["calls"], "pid": os.getpid()}
    if case == "raise":
        raise ValueError("bad input " + secrets["token"])
    if case == "set":
        import handler_state
        handler_state.value = data["value"]
        return getattr(sys.modules[__name__], "STATE")["calls"]
    if case == "nonjson":
        return {"when": object()}
    if case == "big":
        return "x" * data["n"]
    if case == "sleep":
        time.sleep(data["seconds"])
        return "slept"
    if case == "spin":  # CPU time, not wall time: a busy host gives it the CPU it asks for late
        end = time.process_time() + data["seconds"]
        while time.process_time() < end:
            pass
        return "spun"
    if case == "alloc":
        block = bytearray(data["mb"] * 1024 * 1024)
        for i in range(0, len(block), 4096):  # every page, so it is resident
            block[i] = 1
        return len(block)
    if case == "oom":
        blocks = []
        while True:
            blocks.append(bytearray(50 * 1024 * 1024))
    if case == "exit":
        os._exit(3)
    if case == "daemon":  # leaves the call's process group and would outlive the call
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv("/bin/sleep", ["sleep", data["marker"]])
            os._exit(0)
        time.sleep(0.3)  # it has become `sleep MARKER` by now
        return "left one behind"
    if case == "stdin":  # nothing to read: the zygote's /dev/null
        return {"read": sys.stdin.read(), "fd0": os.readlink("/proc/self/fd/0")}
    if case == "nan":
        return {"x": float("nan")}
    if case == "forge":  # the result memfd is the call's: write a result that is not JSON
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if "fnhost-result" in os.readlink(f"/proc/self/fd/{fd}"):
                    os.pwrite(int(fd), data["bytes"].encode("latin-1"), 0)
                    os._exit(0)
        return "no result fd found"
    if case == "sigkill":
        os.kill(os.getpid(), 9)
    if case == "cgroup":
        return [line for line in open("/proc/self/cgroup").read().splitlines() if ":memory:" in line]
    if case == "spam":
        line = "y" * 1000
        for _ in range(data["lines"]):
            print(line)
        return "spammed"
    if case == "forks":
        n = 0
        kids = []
        try:
            for _ in range(200):
                pid = os.fork()
                if pid == 0:
                    time.sleep(5)
                    os._exit(0)
                kids.append(pid)
                n += 1
        except OSError as exc:
            return {"forked": n, "error": str(exc)}
        return {"forked": n}
    if case == "pidfile":
        with open(data["path"], "w") as f:
            f.write(str(os.getpid()))
        time.sleep(data["seconds"])
        return "slept"
    if case == "bigfile":
        with open("/tmp/fnhost-test-bigfile", "wb") as f:
            f.write(b"z" * data["n"])
        return "wrote"
    return None
'''


def write(dir: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return dir


def make_executor(kind: str, request: pytest.FixtureRequest, **options: float) -> Executor:
    """``bwrap``: a sandbox with an interpreter of its own per function; ``shared``: one
    zygote for the environment, each function sandboxed after the fork (as a server whose
    code and environments live under known roots runs them). ``ray`` isolates calls on each
    node as the server would (bubblewrap here); ``ray-unisolated`` is for tests whose calls
    write to the test's own files (pid files)."""
    if kind in ("local", "bwrap"):
        return LocalExecutor(isolation="bwrap" if kind == "bwrap" else "none")
    if kind == "shared":
        code_root = str(request.getfixturevalue("tmp_path_factory").getbasetemp())
        return LocalExecutor(isolation="bwrap", code_root=code_root, env_root=str(Path(PYTHON).parents[1]))
    from fnhost.run.ray import NodeSettings, RayExecutor

    cluster = request.getfixturevalue("ray_cluster")
    node = NodeSettings(isolation="none", allow_unisolated=True) if kind == "ray-unisolated" else None
    return RayExecutor(cluster.address, node=node, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=["local", "bwrap", "shared", pytest.param("ray", marks=pytest.mark.ray)])
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    """The contract holds on the local executor, unisolated and in bubblewrap sandboxes (see
    test_isolation.py), and on the Ray executor."""
    ex = make_executor(request.param, request)
    ex.start()
    yield ex
    ex.stop()


@pytest.fixture(scope="module")
def code_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("code"), {"handler.py": HANDLER, "handler_state.py": "value = None\n"})


@pytest.fixture(scope="module")
def code(code_dir: Path, executor: Executor) -> Path:
    d = code_dir
    result = executor.prepare(ENV, d, "handler.py", env_vars={"MY_VAR": "set"})
    assert result.ok, result
    assert result.fork_safe
    assert result.args == ("data", "secrets", "function_call_info")
    return d


_ids = iter(range(1, 10**6))


def run(executor: Executor, code: Path, data: dict, call_id: int | None = None, **limits: float) -> CallOutcome:
    job = CallJob(
        call_id=call_id or next(_ids),
        function_id=7,
        project="p",
        env=ENV,
        code_dir=code,
        function_path="handler.py",
        data=data,
        secrets={"token": "s3cr3t-value"},
        env_vars={"MY_VAR": "set"},
        schedule_id=data.get("schedule"),
        scheduled_time=data.get("scheduledTime"),
        limits=CallLimits(**{"timeout_s": 30, **limits}),  # type: ignore[arg-type]
    )
    return executor.submit(job).result(120)


def messages(outcome: CallOutcome) -> list[str]:
    return [m for _, m in outcome.logs]


def test_response_logs_info_env_and_redaction(executor: Executor, code: Path) -> None:
    call_id = next(_ids)
    out = run(executor, code, {"case": "echo", "schedule": 5, "scheduledTime": 1000}, call_id=call_id)
    assert out.status == "Completed", out.error
    import json

    body = json.loads(out.response or "null")
    assert body["data"]["case"] == "echo"
    assert body["info"] == {"function_id": 7, "call_id": call_id, "schedule_id": 5, "scheduled_time": 1000}
    assert body["env"] == "set"
    assert {"handler.py", "handler_state.py"} <= set(body["files"])  # it runs in its code directory
    lines = messages(out)
    assert lines[:3] == ["hello ***", "to stderr", "WARNING:mine:a log record"]
    assert not any("s3cr3t-value" in m for m in lines)
    ts = [t for t, _ in out.logs]
    assert ts == sorted(ts) and ts[0] > 1_600_000_000_000
    assert out.end_ms >= out.start_ms


def test_exception_fails_with_trace_in_error_and_logs(executor: Executor, code: Path) -> None:
    out = run(executor, code, {"case": "raise"})
    assert out.status == "Failed"
    assert out.error is not None
    assert out.error["message"] == "ValueError: bad input ***"
    assert "Traceback" in out.error["trace"] and "s3cr3t" not in out.error["trace"]
    assert any(m.startswith("Traceback") for m in messages(out))
    assert "ValueError: bad input ***" in messages(out)


def test_calls_are_separate_processes(executor: Executor, code: Path) -> None:
    first = run(executor, code, {"case": "set", "value": 1})
    second = run(executor, code, {"case": "echo"})
    assert first.response == "1"
    import json

    body = json.loads(second.response or "null")
    assert body["calls"] == 1  # module state set by the first call is not seen
    assert body["pid"] != os.getpid()
    third = json.loads(run(executor, code, {"case": "echo"}).response or "null")
    assert third["pid"] != body["pid"]


def _spare_pid(executor: LocalExecutor, code: Path) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pid = executor.stats()["functions"][str(code)]["sparePid"]
        if pid:
            return int(pid)
        time.sleep(0.05)
    raise AssertionError("no spare process appeared")


def test_calls_get_processes_forked_ahead(executor: Executor, code: Path) -> None:
    import json

    if not isinstance(executor, LocalExecutor):
        pytest.skip("local executor's mechanism; a Ray node's host runs a LocalExecutor, tested here")

    run(executor, code, {"case": "echo"})
    spare = _spare_pid(executor, code)
    second = run(executor, code, {"case": "echo"})
    assert second.status == "Completed" and second.mode == "fork-spare"
    assert json.loads(second.response or "null")["calls"] == 1  # a fresh copy of the handler
    # a spare that died before its call: the call still runs, and a new spare follows
    spare = _spare_pid(executor, code)
    os.kill(spare, signal.SIGKILL)
    time.sleep(0.2)
    third = run(executor, code, {"case": "echo"})
    assert third.status == "Completed", third.error
    assert _spare_pid(executor, code) != spare
    # other limits than the spare was made for: it is dropped, the call forks as usual
    spare = _spare_pid(executor, code)
    other = run(executor, code, {"case": "echo"}, memory_bytes=512 * 1024**2)
    assert other.status == "Completed" and other.mode == "fork"
    deadline = time.monotonic() + 10
    while Path(f"/proc/{spare}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{spare}").exists(), "a dropped spare outlived its drop"


def test_a_calls_cgroups_are_reused_only_as_good_as_new(executor: Executor, code: Path) -> None:
    """Making a memory cgroup is dear, so a call's cgroups are kept for a later call with the
    same limits (``Cgroups.take``/``release``), but only as good as new: the attacks are a call
    that leaves its high-water mark behind (the next call's peak memory), and one that was
    killed for its memory (a later call's SIGKILL read as out of memory)."""
    if not isinstance(executor, LocalExecutor) or executor.cgroups is None or not executor.cgroups.memory:
        pytest.skip("the local executor's memory cgroups")
    import json

    seen = set()
    for _ in range(6):  # one call at a time: its own set and its spare's are all it needs
        out = run(executor, code, {"case": "cgroup"})
        assert out.status == "Completed", out.error
        seen.update(json.loads(out.response or "[]"))
    assert 1 <= len(seen) <= 3, seen

    big = run(executor, code, {"case": "alloc", "mb": 200})
    assert big.status == "Completed" and big.usage is not None and big.usage.peak_memory_bytes >= 190 * 2**20
    for _ in range(3):  # the set the big call had is the next spare's, then the next call's
        small = run(executor, code, {"case": "echo"})
        assert small.status == "Completed" and small.usage is not None, small.error
        assert small.usage.peak_memory_bytes < 100 * 2**20, small.usage

    limit = {"memory_bytes": 300 * 1024 * 1024}
    oom = run(executor, code, {"case": "oom"}, **limit)
    assert oom.status == "Failed" and oom.error and "ran out of memory" in oom.error["message"]
    echo = run(executor, code, {"case": "echo"}, **limit)  # in the spare made during the OOM
    assert echo.status == "Completed", echo.error
    killed = run(executor, code, {"case": "sigkill"}, **limit)  # in the set after it, pooled or new
    assert killed.status == "Failed" and killed.error, killed
    assert "killed by SIGKILL" in killed.error["message"], killed.error


def _sleeping(marker: str) -> list[int]:
    """Host pids of ``sleep MARKER`` processes."""
    found = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if entry.isdigit() and Path(f"/proc/{entry}/cmdline").read_bytes() == f"sleep\0{marker}\0".encode():
                found.append(int(entry))
    return found


def test_a_process_that_left_its_calls_session_dies_with_the_call_in_reused_cgroups_too(
    executor: Executor, code: Path
) -> None:
    """The end of a call signals its process group; a process that left it (``setsid``) is
    found through the call's ``cgroup.procs``. Calls in a row, so the later ones run in sets
    an earlier call left (``Cgroups.release``): a read of ``cgroup.procs`` that gave back an
    earlier read's list (cgroup v1 keeps it for an open file) would miss the daemon."""
    if not isinstance(executor, LocalExecutor) or executor.cgroups is None or not executor.cgroups.bases:
        pytest.skip("the local executor's cgroups")
    for n in range(4):
        marker = f"{3600 + n}.{os.getpid()}"  # seconds for sleep(1), and unique to this run
        out = run(executor, code, {"case": "daemon", "marker": marker})
        assert out.status == "Completed", out.error
        deadline = time.monotonic() + 5
        while _sleeping(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = _sleeping(marker)
        for pid in left:  # leave nothing behind for the other tests either
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        assert not left, f"call {n}'s daemon outlived its call"


def test_usage_tells_cpu_from_waiting_and_shows_peak_memory(executor: Executor, code: Path) -> None:
    spin = run(executor, code, {"case": "spin", "seconds": 1.5})
    sleep = run(executor, code, {"case": "sleep", "seconds": 1.5})
    alloc = run(executor, code, {"case": "alloc", "mb": 300})
    for out in (spin, sleep, alloc):
        assert out.status == "Completed" and out.usage is not None, out.error

    def cpu(out: CallOutcome) -> float:
        assert out.usage is not None
        return out.usage.cpu_user_s + out.usage.cpu_system_s

    # a spinning call uses the CPU it spun for, a sleeping one little
    assert cpu(spin) > 0.5 and cpu(sleep) < 0.25, (spin.usage, sleep.usage)
    assert cpu(spin) > 3 * cpu(sleep)
    assert alloc.usage is not None and 290 * 2**20 <= alloc.usage.peak_memory_bytes < 700 * 2**20, alloc.usage


def test_non_json_and_oversized_response(executor: Executor, code: Path) -> None:
    out = run(executor, code, {"case": "nonjson"})
    assert out.status == "Failed"
    assert out.error and out.error["message"].startswith("The return value is not JSON-serializable")
    out = run(executor, code, {"case": "big", "n": 2000}, response_max_bytes=1000)
    assert out.status == "Failed"
    assert out.error and "more than the limit of 1000 bytes" in out.error["message"]
    ok = run(executor, code, {"case": "big", "n": 900}, response_max_bytes=1000)
    assert ok.status == "Completed" and ok.response == '"' + "x" * 900 + '"'


def test_stdin_is_empty_and_nan_is_not_json(executor: Executor, code: Path) -> None:
    out = run(executor, code, {"case": "stdin"})
    assert out.status == "Completed", out.error
    assert json.loads(out.response or "null") == {"read": "", "fd0": "/dev/null"}
    out = run(executor, code, {"case": "nan"})
    assert out.status == "Failed"
    assert out.error and out.error["message"].startswith("The return value is not JSON-serializable"), out.error


def test_timeout(executor: Executor, code: Path) -> None:
    t0 = time.monotonic()
    out = run(executor, code, {"case": "sleep", "seconds": 60}, timeout_s=1)
    assert time.monotonic() - t0 < 10
    assert out.status == "Timeout"
    assert out.error and "time limit of 1 seconds" in out.error["message"]


def test_out_of_memory(executor: Executor, code: Path) -> None:
    out = run(executor, code, {"case": "oom"}, memory_bytes=300 * 1024 * 1024)
    assert out.status == "Failed"
    assert out.error and "ran out of memory" in out.error["message"]
    assert "0.292969 GB" in out.error["message"]


def test_a_forged_result_that_is_not_json_fails_the_call(executor: Executor, code: Path) -> None:
    """The attack: the call's code writes its own bytes to its result memfd and exits. What
    is stored as a Completed call's response is JSON, always (readers decode it); anything
    else fails the call with a clear message. The legitimate use beside it: a forged result
    that is valid JSON is just a response."""
    for forged in ("OK\n{not json", "OK\n\"\xff\"", "OK\n"):
        out = run(executor, code, {"case": "forge", "bytes": forged})
        assert out.status == "Failed", (forged, out)
        assert out.error and "not valid JSON" in out.error["message"], out.error
    fine = run(executor, code, {"case": "forge", "bytes": 'OK\n{"made": "up"}'})
    assert fine.status == "Completed" and fine.response == '{"made": "up"}', fine


def test_os_exit(executor: Executor, code: Path) -> None:
    out = run(executor, code, {"case": "exit"})
    assert out.status == "Failed"
    assert out.error and "exited with code 3" in out.error["message"]


def test_log_cap_and_truncation_line(executor: Executor, code: Path) -> None:
    out = run(executor, code, {"case": "spam", "lines": 20_000}, log_max_bytes=50_000)
    assert out.status == "Completed"
    lines = messages(out)
    assert sum(len(m) + 1 for m in lines[:-1]) <= 50_000
    assert lines[-1].startswith("[fnhost] Log truncated")


def test_process_limit(executor: Executor, code: Path) -> None:
    out = run(executor, code, {"case": "forks"}, max_processes=10)
    assert out.status == "Completed", out.error
    import json

    body = json.loads(out.response or "null")
    assert body["forked"] < 10 and "error" in body


def test_file_size_limit(executor: Executor, code: Path) -> None:
    out = run(executor, code, {"case": "bigfile", "n": 2_000_000}, max_file_bytes=1_000_000)
    assert out.status == "Failed"
    assert out.error and "File too large" in out.error["message"]


def test_cancel_ends_a_running_call(executor: Executor, code: Path) -> None:
    job = CallJob(
        call_id=next(_ids), function_id=7, project="p", env=ENV, code_dir=code,
        function_path="handler.py", data={"case": "sleep", "seconds": 60},
    )
    future = executor.submit(job)
    time.sleep(0.5)
    executor.cancel(job.call_id, "stopped by test")
    out = future.result(20)
    assert out.status == "Failed" and out.error and out.error["message"] == "stopped by test"


def test_import_error_and_fork_unsafe_handler(executor: Executor, tmp_path: Path) -> None:
    bad = write(tmp_path / "bad", {"handler.py": "import not_a_module\ndef handle():\n    return 1\n"})
    result = executor.prepare(ENV, bad, "handler.py")
    assert not result.ok and "not_a_module" in result.message

    threaded = write(
        tmp_path / "threads",
        {"handler.py": """
            import threading, time, os
            threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
            def handle(data):
                return {"pid": os.getpid(), "threads": threading.active_count()}
        """},
    )
    result = executor.prepare(ENV, threaded, "handler.py")
    assert result.ok and not result.fork_safe
    job = CallJob(call_id=next(_ids), function_id=8, project="p", env=ENV, code_dir=threaded,
                  function_path="handler.py", data={})
    out = executor.submit(job).result(120)
    assert out.status == "Completed", out.error
    assert out.mode == "spawn"
    assert '"threads": 2' in (out.response or "")


def test_zygote_crash_fails_calls_in_flight_and_restarts(executor: Executor, tmp_path: Path) -> None:
    d = write(tmp_path / "crash", {"handler.py": "import time\ndef handle(data):\n    time.sleep(data['s'])\n    return 'ok'\n"})
    assert executor.prepare(ENV, d, "handler.py").ok
    pid = executor.stats()["functions"][str(d)]["pid"]
    job = CallJob(call_id=next(_ids), function_id=9, project="p", env=ENV, code_dir=d,
                  function_path="handler.py", data={"s": 60})
    future = executor.submit(job)
    time.sleep(0.5)
    os.kill(pid, 9)
    out = future.result(20)
    assert out.status == "Failed" and out.error and "ended unexpectedly" in out.error["message"]

    def restarted() -> bool:
        info = executor.stats()["functions"].get(str(d))
        return bool(info and info["pid"] and info["pid"] != pid)

    deadline = time.monotonic() + 20
    while not restarted() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert restarted()
    job = CallJob(call_id=next(_ids), function_id=9, project="p", env=ENV, code_dir=d,
                  function_path="handler.py", data={"s": 0})
    assert executor.submit(job).result(30).status == "Completed"


def wait_for_pid(path: Path, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError(f"the call did not write {path}")


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


@pytest.mark.parametrize(
    "kind", ["local", pytest.param("ray-unisolated", marks=pytest.mark.ray)]
)  # the call writes a pid file here
def test_stop_fails_running_calls_and_ends_their_processes(
    kind: str, request: pytest.FixtureRequest, code_dir: Path, tmp_path: Path
) -> None:
    ex = make_executor(kind, request)
    ex.start()
    pidfile = tmp_path / "pid"
    future = ex.submit(CallJob(call_id=next(_ids), function_id=1, project="p", env=ENV, code_dir=code_dir,
                               function_path="handler.py", env_vars={"MY_VAR": "set"},
                               data={"case": "pidfile", "path": str(pidfile), "seconds": 60}))
    pid = wait_for_pid(pidfile)
    ex.stop()
    out = future.result(30)
    assert out.status == "Failed" and "server stopped" in (out.error or {}).get("message", "")
    assert wait_gone(pid), f"call process {pid} outlived stop()"


NEIGHBOUR = '''
import os

def handle(data, secrets):
    out = {"uid": os.getuid(), "pid": os.getpid(), "mine": sorted(os.listdir("/function"))}
    with open("/tmp/left-here", "w") as f:
        f.write(secrets["token"])
    out["tmp"] = sorted(os.listdir("/tmp"))
    out["processes"] = sorted(
        open(f"/proc/{p}/cmdline").read().replace("\\0", " ") for p in os.listdir("/proc") if p.isdigit()
    )
    other = data["other"]
    for label, path in (("code", f"{other}/handler.py"), ("environ", f"/proc/{data['otherPid']}/environ")):
        try:
            out[label] = open(path).read()[:40]
        except OSError as exc:
            out[label] = type(exc).__name__
    out["roots"] = {p: (sorted(os.listdir(p)) if os.path.isdir(p) else None) for p in data["roots"]}
    return out
'''


def test_functions_sharing_a_zygote_see_nothing_of_each_other(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Local-only: one environment zygote forks both functions' zygotes, each of which builds
    its own sandbox before it reads anything of its function's; neither sees the other's code,
    secrets, /tmp or processes, and each runs as its own uid."""
    ex = make_executor("shared", request)
    assert isinstance(ex, LocalExecutor)
    ex.start()
    try:
        one = write(tmp_path / "code" / "81", {"handler.py": NEIGHBOUR, "marker.txt": "one's code"})
        two = write(tmp_path / "code" / "82", {"handler.py": NEIGHBOUR, "marker.txt": "two's code"})
        assert ex.prepare(ENV, one, "handler.py").ok and ex.prepare(ENV, two, "handler.py").ok
        stats = ex.stats()
        assert len([k for k in stats["envs"] if k.startswith("shared:")]) == 1
        assert stats["functions"][str(one)]["shared"] and stats["functions"][str(two)]["shared"]
        # a call of two is running (its secrets are in its process) while one looks around
        slow = ex.submit(CallJob(call_id=next(_ids), function_id=82, project="p", env=ENV, code_dir=two,
                                 function_path="handler.py", secrets={"token": "two's secret"},
                                 data={"other": str(one), "otherPid": 1, "roots": []}))
        out = ex.submit(CallJob(call_id=next(_ids), function_id=81, project="p", env=ENV, code_dir=one,
                                function_path="handler.py", secrets={"token": "one's secret"},
                                data={"other": str(two), "otherPid": stats["functions"][str(two)]["pid"],
                                      "roots": [str(tmp_path / "code"), "/fnhost/code", "/fnhost/sockets"]})).result(60)
        assert slow.result(60).status == "Completed"
    finally:
        ex.stop()
    assert out.status == "Completed", out.error
    seen = json.loads(out.response or "{}")
    assert seen["uid"] == 200_081 and seen["mine"] == ["handler.py", "marker.txt"]
    assert own_tmp_entries(seen["tmp"]) == ["left-here"]  # its own /tmp only
    assert seen["code"] == "FileNotFoundError" and seen["environ"] in ("FileNotFoundError", "PermissionError")
    assert seen["roots"] == {str(tmp_path / "code"): None, "/fnhost/code": [], "/fnhost/sockets": []}
    assert all("two" not in p and "82" not in p for p in seen["processes"]), seen["processes"]
    assert "two's" not in json.dumps(seen)


def test_stop_leaves_no_zygote_behind(tmp_path: Path) -> None:
    """Local-only: a local executor owns its zygotes and ends them on stop. The Ray executor's
    zygotes belong to the node hosts, which every replica shares; they end with the cluster."""
    d = write(tmp_path / "c", {"handler.py": "import time\ndef handle():\n    time.sleep(60)\n"})
    ex = LocalExecutor()
    ex.start()
    assert ex.prepare(ENV, d, "handler.py").ok
    stats = ex.stats()
    pids = [f["pid"] for f in stats["functions"].values()] + [e["pid"] for e in stats["envs"].values()]
    ex.submit(CallJob(call_id=next(_ids), function_id=1, project="p", env=ENV, code_dir=d,
                      function_path="handler.py"))
    pids.append(_spare_pid(ex, d))  # the process forked ahead for the next call
    ex.stop()
    for pid in pids:
        assert wait_gone(pid, 5), pid


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/smaps_rollup")


def test_an_environment_zygote_keeps_its_heap_in_huge_pages(tmp_path: Path) -> None:
    """Its function zygotes share its heap and fork every call: a heap in huge pages makes
    each fork copy, and each exit unmap, fewer entries (bootstrap._heap_into_huge_pages).
    The calls it serves still run."""
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not thp.exists() or "[never]" in thp.read_text():
        pytest.skip("transparent huge pages are off on this kernel")
    if tuple(int(x) for x in os.uname().release.split(".")[:2]) < (6, 1):
        pytest.skip("MADV_COLLAPSE came with Linux 6.1")
    d = write(tmp_path / "c", {"handler.py": "def handle(data):\n    return data\n"})
    ex = LocalExecutor()
    ex.start()
    try:
        assert ex.prepare(ENV, d, "handler.py").ok
        out = ex.submit(CallJob(call_id=next(_ids), function_id=1, project="p", env=ENV, code_dir=d,
                                function_path="handler.py", data={"n": 1})).result(60)
        assert out.status == "Completed" and json.loads(out.response or "null") == {"n": 1}
        (env,) = ex.stats()["envs"].values()
        assert _kib(env["pid"], "AnonHugePages") >= 2048, "the environment zygote's heap is in 4 KiB pages only"
    finally:
        ex.stop()


# -- Ray only: what a cluster adds (other machines' processes that can vanish, placement) ---------

@pytest.fixture(scope="module")
def ray_executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    """Unisolated: these calls write pid files for the test (isolated Ray calls: test_escape.py)."""
    ex = make_executor("ray-unisolated", request)
    ex.start()
    yield ex
    ex.stop()


def started(executor: Any, call_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = executor.running().get(call_id)
        if info and info["started"]:
            return info
        time.sleep(0.05)
    raise AssertionError(f"call {call_id} did not start")


@pytest.mark.parametrize("victim", ["workerPid", "hostPid"])
def test_ray_lost_worker_or_host_fails_the_call(
    ray_executor: Any, code_dir: Path, tmp_path: Path, victim: str
) -> None:
    code = code_dir
    pidfile = tmp_path / "pid"
    job = CallJob(call_id=next(_ids), function_id=7, project="p", env=ENV, code_dir=code,
                  function_path="handler.py",
                  data={"case": "pidfile", "path": str(pidfile), "seconds": 60})
    future = ray_executor.submit(job)
    call_pid = wait_for_pid(pidfile)
    info = started(ray_executor, job.call_id)
    os.kill(info[victim], 9)
    out = future.result(60)
    assert out.status == "Failed"
    message = (out.error or {}).get("message", "")
    if victim == "workerPid":
        assert message.startswith("The call was lost: the Ray worker or node running it failed"), message
    else:
        assert message == "The fnhost host process on the Ray node ended unexpectedly while the call ran."
    assert messages(out)[-1] == f"[fnhost] {message}"
    assert wait_gone(call_pid), "the call's process outlived its Ray worker"
    # the node recovers: the next call runs (on a restarted host when it was the host that died)
    again = run(ray_executor, code, {"case": "echo"})
    assert again.status == "Completed", again.error


def _connections_to(path: str) -> int:
    """Unix sockets bound to or connected into ``path`` (a listener's queued connections too)."""
    with open("/proc/net/unix") as f:
        return sum(1 for line in f if line.rstrip("\n").endswith(" " + path))


def _host_of(executor: Any, code_dir: Path, tmp_path: Path) -> tuple[int, str]:
    """The pid and socket path of the node host that runs ``executor``'s calls (one call runs)."""
    import ray

    from fnhost.run.ray import NAMESPACE, _host_name

    pidfile = tmp_path / "pid"
    job = CallJob(call_id=next(_ids), function_id=7, project="p", env=ENV, code_dir=code_dir,
                  function_path="handler.py", data={"case": "pidfile", "path": str(pidfile), "seconds": 0.5})
    future = executor.submit(job)
    wait_for_pid(pidfile)
    info = started(executor, job.call_id)
    assert future.result(60).status == "Completed"
    host = ray.get_actor(_host_name(info["node"], executor.node.key), namespace=NAMESPACE)
    return info["hostPid"], ray.get(host.address.remote(), timeout=60)


def _killed_once_reached(host_pid: int, path: str, request: Callable[[], T]) -> T:
    """Stop the host, start ``request``, kill the host once the request's task waits in the
    host's socket queue (so the host ran nothing of it), and return the request's result."""
    os.kill(host_pid, signal.SIGSTOP)  # it accepts no more: a new connection waits in the queue
    with ThreadPoolExecutor(1) as pool:
        try:
            before = _connections_to(path)
            result = pool.submit(request)
            deadline = time.monotonic() + 60
            while _connections_to(path) <= before:
                assert time.monotonic() < deadline, "the task did not reach the stopped host"
                time.sleep(0.05)
        finally:
            os.kill(host_pid, signal.SIGKILL)
        return result.result(180)


def test_ray_call_that_reached_a_dying_host_runs_on_the_restarted_one(
    ray_executor: Any, code_dir: Path, tmp_path: Path
) -> None:
    """A host killed while a call's task waits in its socket's queue ran none of the call:
    the task takes it to the restarted host, and the call completes (not Failed)."""
    host_pid, path = _host_of(ray_executor, code_dir, tmp_path)
    job = CallJob(call_id=next(_ids), function_id=7, project="p", env=ENV, code_dir=code_dir,
                  function_path="handler.py", data={"case": "echo"}, secrets={"token": "s3cr3t-value"})
    out = _killed_once_reached(host_pid, path, lambda: ray_executor.submit(job).result(180))
    assert out.status == "Completed", out.error
    assert json.loads(out.response or "null")["data"] == {"case": "echo"}
    assert wait_gone(host_pid)


def test_ray_prepare_that_reached_a_dying_host_is_asked_of_the_restarted_one(
    ray_executor: Any, code_dir: Path, tmp_path: Path
) -> None:
    """The same for a prepare (it is idempotent): it is asked again of the restarted host and
    succeeds, instead of failing the deploy."""
    host_pid, path = _host_of(ray_executor, code_dir, tmp_path)
    prepared = _killed_once_reached(host_pid, path, lambda: ray_executor.prepare(ENV, code_dir, "handler.py"))
    assert prepared.ok, prepared.message
    assert wait_gone(host_pid)
    again = run(ray_executor, code_dir, {"case": "echo"})
    assert again.status == "Completed", again.error


def test_ray_call_no_node_can_place_fails_clearly(ray_cluster: Any, code_dir: Path) -> None:
    code = code_dir
    from fnhost.run.ray import RayExecutor

    ex = RayExecutor(ray_cluster.address, start_timeout_s=3)
    ex.start()
    try:
        job = CallJob(call_id=next(_ids), function_id=7, project="p", env=ENV, code_dir=code,
                      function_path="handler.py", data={"case": "echo"},
                      limits=CallLimits(cpu=1000, timeout_s=30))
        out = ex.submit(job).result(60)
    finally:
        ex.stop()
    assert out.status == "Failed"
    assert (out.error or {}).get("message", "").startswith("No Ray node could start the call within 3 s")
    assert "1000 CPU" in out.error["message"]


def test_ray_environment_missing_on_the_node_fails_clearly(ray_executor: Any, code_dir: Path) -> None:
    elsewhere = Env("env-not-here", "/nonexistent/fnhost-env/bin/python")
    result = ray_executor.prepare(elsewhere, code_dir, "handler.py")
    assert not result.ok
    assert "The function's environment is not on Ray node" in result.message
    assert "FNHOST_ENV_DIR" in result.message
    job = CallJob(call_id=next(_ids), function_id=7, project="p", env=elsewhere, code_dir=code_dir,
                  function_path="handler.py", data={"case": "echo"})
    out = ray_executor.submit(job).result(60)
    assert out.status == "Failed" and out.error and out.error["message"] == result.message
    assert messages(out) == [f"[fnhost] {result.message}"]
