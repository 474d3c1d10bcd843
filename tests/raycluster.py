"""A real local Ray cluster for tests and benchmarks, on loopback only.

``ray start --head --block`` in its own session, every port chosen free and bound to
127.0.0.1 (``--node-ip-address 127.0.0.1`` with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, or
Ray swaps loopback for the host's external address). Stopping kills the whole process tree
it made (raylet, GCS, workers, the fnhost node hosts and their zygotes) by pid, never by
name: other Ray clusters on the machine are left alone.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.live import free_port

RAY_BIN = Path(sys.executable).with_name("ray")
# read by ray when imported: stay on loopback, and (under `uv run`) do not ship the project
# to the workers as a runtime env; the cluster runs this checkout's own .venv
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
}


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    tree = _children()
    out, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class RayCluster:
    def __init__(self, num_cpus: int = 8) -> None:
        self.num_cpus = num_cpus
        # Ray's Unix sockets live under the temp dir: keep the path short
        self.temp_dir = Path(f"/tmp/fnhost-rt-{secrets.token_hex(3)}")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.client_port = free_port()  # Ray Client's server (fnhost does not use it)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.temp_dir / "ray-start.log"

    def start(self, timeout: float = 120) -> RayCluster:
        if not RAY_BIN.exists():
            raise RuntimeError(f"{RAY_BIN} is missing: install the ray extra (uv sync --all-extras)")
        self.temp_dir.mkdir(parents=True)
        ports = {
            "--port": self.port,
            "--ray-client-server-port": self.client_port,
            "--node-manager-port": free_port(),
            "--object-manager-port": free_port(),
            "--dashboard-port": free_port(),
            "--dashboard-agent-listen-port": free_port(),
            "--dashboard-agent-grpc-port": free_port(),
            "--runtime-env-agent-port": free_port(),
            "--metrics-export-port": free_port(),
        }
        cmd = [
            str(RAY_BIN), "start", "--head", "--block",
            "--node-ip-address", "127.0.0.1",
            "--num-cpus", str(self.num_cpus),
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--temp-dir", str(self.temp_dir),
            *[x for flag, port in ports.items() for x in (flag, str(port))],
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                # TMPDIR: the node hosts keep their socket and unpacked code under it
                env={**os.environ, **RAY_ENV, "TMPDIR": str(self.temp_dir)},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{self.log()}")
            if "Ray runtime started" in self.log():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the Ray cluster did not start within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        pids = descendants(self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and self.proc.poll() is None:
            pids += [p for p in descendants(self.proc.pid) if p not in pids]
            time.sleep(0.2)
        # workers and the node hosts run in sessions of their own: end them by pid
        for pid in [self.proc.pid, *pids]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.temp_dir, ignore_errors=True)
