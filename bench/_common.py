"""Pieces every benchmark shares: a real server, zips, percentiles, a table, baselines.

Benchmarks start ``fnhost serve`` on a free port on 127.0.0.1 (as the tests do) and talk
to it over HTTP; environments are cached in ``bench/results/envs`` so later runs skip the
first build. Figures are medians and percentiles: the machine is a shared 2-core box.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.live import LiveServer  # noqa: E402

RESULTS = REPO / "bench" / "results"
ENVS = RESULTS / "envs"


def zip_of(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
    return buf.getvalue()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "p90": pct(values, 0.9),
        "p99": pct(values, 0.99),
        "n": len(values),
    }


@contextmanager
def live_server(env: dict[str, str] | None = None) -> Iterator[LiveServer]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with TemporaryDirectory(prefix="fnhost-bench-") as home:
        live = LiveServer(Path(home), env={"FNHOST_ENV_DIR": str(ENVS), **(env or {})})
        live.start()
        try:
            yield live
        finally:
            live.stop()


class Api:
    """A keep-alive HTTP client of one project, with a bearer token of a client."""

    def __init__(self, creds: dict[str, Any]) -> None:
        token = httpx.post(
            creds["token_url"],
            data={
                "grant_type": "client_credentials",
                "client_id": creds["client_id"],
                "client_secret": creds["client_secret"],
            },
        ).json()["access_token"]
        self.base_url = creds["base_url"]
        self.prefix = f"{self.base_url}/api/v1/projects/{creds['project']}"
        self.http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=120)

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        r = self.http.post(self.prefix + path, json=body, params=params or None)
        r.raise_for_status()
        return r.json()

    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(self.prefix + path, params=params or None)
        r.raise_for_status()
        return r.json()

    def nonce(self) -> str:
        return str(self.post("/sessions", {"items": [{"tokenExchange": True}]})["items"][0]["nonce"])

    def call_and_wait(self, function_id: int, data: Any) -> dict[str, Any]:
        """What a client does for one call with fnhost's server-side wait: session, call, wait."""
        call = self.post(f"/functions/{function_id}/call", {"data": data, "nonce": self.nonce()})
        if call["status"] == "Running":
            call = self.post(f"/functions/{function_id}/calls/{call['id']}/wait", waitSeconds=60)
        return dict(call)

    def deploy(self, name: str, code: bytes, timeout: float = 300) -> int:
        upload = self.post("/files", {"name": f"{name}.zip"})
        url = upload["uploadUrl"]
        put = self.http.put(url if "://" in url else self.base_url + url, content=code)
        put.raise_for_status()
        fid = self.post("/functions", {"items": [{"name": name, "fileId": upload["id"]}]})["items"][0]["id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.post("/functions/byids", {"items": [{"id": fid}]})["items"][0]
            if status["status"] == "Ready":
                return int(fid)
            if status["status"] == "Failed":
                raise RuntimeError(f"{name} failed to deploy: {status.get('error')}")
            time.sleep(0.01)
        raise RuntimeError(f"{name} did not deploy in {timeout}s")


def time_process(cmd: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def base_python() -> str:
    """The interpreter of the runtime baseline environment (built by the first deploy)."""
    return str(next(ENVS.glob("base-py*/bin/python")))


BARE_FORK = """
import gc, json, os, sys, time
import cognite.client  # a warm process: the import is paid once, before timing
runs, freeze = int(sys.argv[1]), sys.argv[2] == "freeze"
if freeze:
    gc.collect(); gc.freeze()  # as fnhost's zygotes do before they fork
times = []
before = os.times()
for _ in range(runs):
    started = time.perf_counter()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, json.dumps({"response": {"ok": True}}).encode())
        os._exit(0)
    os.close(w)
    while os.read(r, 65536):
        pass
    os.close(r)
    os.waitpid(pid, 0)
    times.append(time.perf_counter() - started)
after = os.times()
cpu = sum(after[i] - before[i] for i in range(4))  # user, system, children's user, system
print(json.dumps({"times": times, "cpu_per_fork": cpu / runs}))
"""


def bare_forks(runs: int, *, freeze: bool = False) -> dict[str, Any]:
    """``runs`` forks of a process that has imported cognite.client, each writing a reply on a
    pipe and reaped: the wall time of each, and the CPU (parent and children) per fork."""
    out = subprocess.run(
        [base_python(), "-c", BARE_FORK, str(runs), "freeze" if freeze else "-"],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def baselines(runs: int) -> dict[str, list[float]]:
    """The machine's limits, measured now: an empty interpreter, a cold import, a warm fork."""
    python = base_python()
    return {
        "baseline: python -c pass": time_process([python, "-c", "pass"], runs),
        "baseline: fresh python importing cognite.client": time_process(
            [python, "-c", "import cognite.client"], max(5, runs // 4)
        ),
        "baseline: bare fork of a warm process (pipe, reap)": bare_forks(runs * 5)["times"],
    }


def descendants(root_pid: int) -> list[int]:
    """A process and every process below it, from /proc (host pids, sandboxes included)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def pss_bytes(root_pid: int) -> int:
    """Proportional set size of a process and all its descendants."""
    total = 0
    for pid in descendants(root_pid):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, reaped_children: bool) -> float:
    """User + system CPU of one process; with ``reaped_children``, also of the children it
    has waited for (their time moves into the parent when it reaps them)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICK


def print_table(title: str, rows: list[tuple[str, dict[str, float] | None, str]], unit: str = "ms") -> None:
    """Rows of (name, summary in seconds or None, note)."""
    print(f"\n{title}\n")
    print(f"{'case':58} {'median ' + unit:>11} {'p90':>8} {'p99':>8} {'n':>6}  note")
    for name, s, note in rows:
        if s is None:
            print(f"{name:58} {'':>11} {'':>8} {'':>8} {'':>6}  {note}")
            continue
        scale = 1000 if unit == "ms" else 1
        print(
            f"{name:58} {s['median'] * scale:11.2f} {s['p90'] * scale:8.2f} {s['p99'] * scale:8.2f} "
            f"{int(s['n']):6d}  {note}"
        )


def write_results(name: str, data: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=float))
    return path


@dataclass(frozen=True)
class Bar:
    """One figure of an issue's bars against a baseline measured in the same run.

    ``ratio``: value / baseline must be at most ``limit`` (``at_least``: at least); with
    ``product``, value * baseline is the figure compared (calls/s * ms of a bare fork).
    ``rounds``: the ratio of each round of a benchmark measured in rounds (each against the
    baseline of its own round); the ratio compared is then their median, and ``value`` and
    ``base_value`` are the medians shown beside it.
    """

    figure: str
    value: float
    unit: str
    baseline: str
    base_value: float
    base_unit: str
    limit: float
    at_least: bool = False
    product: bool = False
    rounds: tuple[float, ...] = ()

    @property
    def ratio(self) -> float:
        if self.rounds:
            return statistics.median(self.rounds)
        if self.product:
            return self.value * self.base_value
        return self.value / self.base_value if self.base_value else float("inf")

    @property
    def met(self) -> bool:
        return self.ratio >= self.limit if self.at_least else self.ratio <= self.limit


def print_bars(title: str, bars: list[Bar]) -> None:
    """The bars, each with its same-run baseline, the ratio and whether it is met."""
    print(f"\nBars: {title}\n")
    print(f"{'figure':56} {'value':>12}  {'same-run baseline':42} {'ratio':>9} {'bar':>9}  met")
    for b in bars:
        op = "x" if b.product else "/"
        sign = ">=" if b.at_least else "<="
        base = f"{b.baseline} {b.base_value:.2f} {b.base_unit}"
        print(
            f"{b.figure:56} {b.value:9.2f} {b.unit:<3} {base:42} {b.ratio:8.2f}{op} {sign}{b.limit:<7g}  "
            f"{'yes' if b.met else 'NO'}"
        )
    for b in bars:
        if b.rounds:
            each = ", ".join(f"{r:.2f}" for r in b.rounds)
            print(f"  {b.figure}: the median of the rounds' ratios ({each})")
