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
from typing import Any

from tests.live import free_port

RAY_BIN = Path(sys.executable).with_name("ray")
REPO = Path(__file__).resolve().parents[1]
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


class RayNode:
    """One ``ray start --block`` process (head or worker) and everything it starts."""

    def __init__(self, cmd: list[str], log_path: Path, tmpdir: Path) -> None:
        self.cmd = cmd
        self.log_path = log_path
        self.tmpdir = tmpdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                # TMPDIR: the node hosts keep their socket and unpacked code under it
                env={**os.environ, **RAY_ENV, "TMPDIR": str(self.tmpdir)},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=REPO,  # tests.raynode
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{self.log()}")
            if "Ray runtime started" in self.log():
                return
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"the Ray node did not start within {timeout} s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except FileNotFoundError:
            return ""

    def kill(self, graceful: float = 5) -> None:
        """End the node's whole process tree (``graceful`` seconds after SIGTERM, then SIGKILL)."""
        if self.proc is None:
            return
        pids = descendants(self.proc.pid)
        if graceful:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + graceful
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


def _ports(*flags: str) -> list[str]:
    return [x for flag in flags for x in (flag, str(free_port()))]


class RayCluster:
    def __init__(self, num_cpus: int = 8) -> None:
        self.num_cpus = num_cpus
        # Ray's Unix sockets live under the temp dir: keep the path short
        self.temp_dir = Path(f"/tmp/fnhost-rt-{secrets.token_hex(3)}")
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[RayNode] = []

    def start(self, timeout: float = 120) -> RayCluster:
        if not RAY_BIN.exists():
            raise RuntimeError(f"{RAY_BIN} is missing: install the ray extra (uv sync --all-extras)")
        self.temp_dir.mkdir(parents=True)
        cmd = [
            str(RAY_BIN), "start", "--head", "--block",
            "--node-ip-address", "127.0.0.1",
            "--port", str(self.port),
            "--num-cpus", str(self.num_cpus),
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--temp-dir", str(self.temp_dir),
            *_ports(
                "--ray-client-server-port", "--node-manager-port", "--object-manager-port",
                "--dashboard-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                "--runtime-env-agent-port", "--metrics-export-port",
            ),
        ]
        return self._start(RayNode(cmd, self.temp_dir / "head.log", self.temp_dir), timeout)

    def add_worker(self, num_cpus: int, timeout: float = 120) -> RayNode:
        """Another node on this machine (its own raylet), joined to the head."""
        n = len(self.nodes)
        cmd = [sys.executable, "-m", "tests.raynode", "--address", self.address, "--num-cpus", str(num_cpus)]
        node = RayNode(cmd, self.temp_dir / f"worker{n}.log", self.temp_dir)
        self._start(node, timeout)
        return node

    def _start(self, node: RayNode, timeout: float) -> Any:
        self.nodes.append(node)
        try:
            node.start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def log(self) -> str:
        return "\n".join(node.log() for node in self.nodes)

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.kill()
        self.nodes.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
