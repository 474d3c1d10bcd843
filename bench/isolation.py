"""What isolation costs per call and per deploy, each against the same thing without it.

    uv run python bench/isolation.py [--calls 300] [--functions 5] [--builds 5]

Runs the parts themselves (no HTTP server), in one process, with this project's interpreter
(which has cognite-sdk) and a trivial handler:

- calls, for ``none``, ``bwrap`` without a network namespace (what sandboxes had before
  they got one) and ``bwrap`` (the default now): warm ``submit`` → outcome, sequential;
  the zygote start (prepare); PSS per function;
- a request from inside a call to an HTTP server standing for the API: through the
  sandbox's loopback forwarder and Unix socket (``bwrap``), against straight to loopback TCP
  (``none``), per request;
- builds of a function's requirements (a bare baseline, so the figures are the step itself):
  a local package with a PEP 517 backend, built by uv on the host as the server's user (as
  before) against in the function's sandbox (now); and a wheel from a loopback index
  installed by uv directly (before) against through the egress proxy with ``--no-build``
  (now).

Prints tables with the ratio of each figure to its "before"; writes ``bench/results/isolation.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socketserver
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from tests.pkgindex import PackageIndex  # noqa: E402

from fnhost.build import runtimes  # noqa: E402
from fnhost.build.envs import BuildSandbox, EnvironmentCache  # noqa: E402
from fnhost.run.abc import CallJob  # noqa: E402
from fnhost.run.local import LocalExecutor  # noqa: E402
from fnhost.run.network import Egress, NetworkPolicy  # noqa: E402
from fnhost.run.sandbox import Isolation, detect  # noqa: E402
from fnhost.settings import Settings  # noqa: E402

PYTHON = str(REPO / ".venv" / "bin" / "python")
HANDLER = """\
import http.client, time

def handle(data):
    if "port" not in data:
        return data
    fresh, kept = [], []
    conn = http.client.HTTPConnection("127.0.0.1", data["port"], timeout=10)
    for _ in range(data["requests"]):
        t0 = time.perf_counter()  # a connection of its own, as urllib makes
        one = http.client.HTTPConnection("127.0.0.1", data["port"], timeout=10)
        one.request("GET", "/")
        one.getresponse().read()
        one.close()
        fresh.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()  # one kept-alive connection, as the SDK's client keeps
        conn.request("GET", "/")
        conn.getresponse().read()
        kept.append((time.perf_counter() - t0) * 1000)
    return {"fresh": fresh, "kept": kept}
"""
BACKEND = '''
import base64, hashlib, os, zipfile

def get_requires_for_build_wheel(config_settings=None):
    return []

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = {
        "benchpkg.py": "VALUE = 1\\n",
        "benchpkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\\nName: benchpkg\\nVersion: 1.0\\n",
        "benchpkg-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: x\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
    }
    name = "benchpkg-1.0-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(os.path.join(wheel_directory, name), "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(text)}")
        record.append("benchpkg-1.0.dist-info/RECORD,,")
        zf.writestr("benchpkg-1.0.dist-info/RECORD", "\\n".join(record) + "\\n")
    return name
'''
PYPROJECT = '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n' \
    '[project]\nname = "benchpkg"\nversion = "1.0"\n'


class Env:
    hash = "bench-env"
    python = PYTHON
    site_dirs: list[str] = []


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


class _UnixHello(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def api_servers(root: Path) -> tuple[str, str]:
    """The same tiny HTTP server on loopback TCP and on a Unix socket: (tcp url, socket path)."""
    tcp = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    path = root / "api.sock"

    class Handler(_Hello):
        disable_nagle_algorithm = False  # not a TCP socket

        def address_string(self) -> str:
            return "unix"

    unix = _UnixHello(str(path), Handler)
    threading.Thread(target=unix.serve_forever, daemon=True).start()
    os.chmod(path, 0o666)
    return f"http://127.0.0.1:{tcp.server_address[1]}/", str(path)


def measure_calls(setups: list[tuple[str, Isolation | str]], calls: int, functions: int, root: Path,
                  api_tcp: str, api_socket: str) -> list[dict[str, Any]]:
    """Every setup's executor at once, their calls interleaved, so a busy moment of this
    shared host falls on all of them alike."""
    executors = []
    try:
        for label, isolation in setups:
            ex = LocalExecutor(isolation=isolation, api_socket=api_socket)
            ex.start()
            executors.append((label, ex))
        dirs: dict[str, list[Path]] = {label: [] for label, _ in executors}
        prepare_ms: dict[str, list[float]] = {label: [] for label, _ in executors}
        for i in range(functions):
            for label, ex in executors:
                d = root / label.replace(" ", "-") / "code" / str(100 + i)
                d.mkdir(parents=True)
                (d / "handler.py").write_text(HANDLER)
                t0 = time.perf_counter()
                result = ex.prepare(Env(), d, "handler.py")
                prepare_ms[label].append((time.perf_counter() - t0) * 1000)
                assert result.ok, result
                dirs[label].append(d)
        latencies: dict[str, list[float]] = {label: [] for label, _ in executors}
        for n in range(calls):
            for label, ex in executors:
                d = dirs[label][n % functions]
                job = CallJob(call_id=n + 1, function_id=int(d.name), project="p", env=Env(), code_dir=d,
                              function_path="handler.py", data={"n": n})
                t0 = time.perf_counter()
                out = ex.submit(job).result(60)
                latencies[label].append((time.perf_counter() - t0) * 1000)
                assert out.status == "Completed" and json.loads(out.response or "{}") == {"n": n}, out
        results = []
        for label, ex in executors:
            # requests from inside a call: through the forwarder where there is a namespace
            port = ex.isolation.api_port if ex.isolation.network else int(api_tcp.rsplit(":", 1)[1].strip("/"))
            job = CallJob(call_id=calls + 1, function_id=100, project="p", env=Env(), code_dir=dirs[label][0],
                          function_path="handler.py", data={"port": port, "requests": 200})
            out = ex.submit(job).result(120)
            assert out.status == "Completed", out.error
            times = json.loads(out.response or "{}")
            pss = [f["pss"] for f in ex.stats()["functions"].values()]
            results.append({
                "label": label,
                "callMedianMs": statistics.median(latencies[label]),
                "callP90Ms": pct(latencies[label], 0.9),
                "prepareMedianMs": statistics.median(prepare_ms[label]),
                "requestMedianMs": statistics.median(times["fresh"][20:]),
                "keptRequestMedianMs": statistics.median(times["kept"][20:]),
                "pssPerFunctionMb": statistics.median(pss) / 1024**2 if pss else 0.0,
            })
        return results
    finally:
        for _, ex in executors:
            ex.stop()


def measure_builds(builds: int, root: Path) -> dict[str, Any]:
    """Each build in a fresh environment directory (a cache miss), a bare baseline."""
    index = PackageIndex()
    index.add("benchwheel", "1.0", {"benchwheel.py": "VALUE = 1\n"})
    code = root / "build-code" / "90"
    (code / "pkg").mkdir(parents=True)
    (code / "pkg" / "pyproject.toml").write_text(PYPROJECT)
    (code / "pkg" / "backend.py").write_text(BACKEND)
    (code / "requirements.txt").write_text("./pkg\n")
    found = runtimes.discover()
    egress = Egress()
    isolation = detect("bwrap")
    sandbox = BuildSandbox(lambda: isolation, egress, NetworkPolicy())
    out: dict[str, list[float]] = {k: [] for k in ("local-host", "local-sandbox", "wheel-direct", "wheel-proxy")}
    try:
        for n in range(builds):
            for kind in out:
                settings = Settings(home=root / "home", env_dir=root / f"envs-{kind}-{n}", baseline_requirements=[])
                cache = EnvironmentCache(settings, found, sandbox if kind in ("local-sandbox", "wheel-proxy") else None)
                cache.baseline(settings.default_runtime)  # not timed: the same for every kind
                t0 = time.perf_counter()
                if kind.startswith("local"):
                    cache.get_or_build(settings.default_runtime, "./pkg\n", requirements_file=code / "requirements.txt",
                                       code_digest=f"bench:{n}", function_id=90)
                else:
                    cache.get_or_build(settings.default_runtime, "benchwheel==1.0\n", index_url=index.url)
                out[kind].append((time.perf_counter() - t0) * 1000)
    finally:
        egress.close()
        index.close()
    return {k: statistics.median(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--functions", type=int, default=5)
    parser.add_argument("--builds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fnhost-bench-iso-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        api_tcp, api_socket = api_servers(root)
        bwrap = detect("bwrap")
        assert bwrap.network, f"no network namespaces here: {bwrap.reason}"
        before = dataclasses.replace(bwrap, network=False)
        setups: list[tuple[str, Isolation | str]] = [("none", "none"), ("bwrap, no netns", before), ("bwrap + netns", bwrap)]
        calls = measure_calls(setups, args.calls, args.functions, root, api_tcp, api_socket)
        builds = measure_builds(args.builds, root)
    print(f"{args.calls} sequential warm calls over {args.functions} functions; prepare = zygote start;")
    print("request = one HTTP GET from inside a call to a server standing for the API, on a new")
    print("connection or on one kept alive (as the SDK's client does)")
    print(f"{'isolation':<17} {'call p50 ms':>12} {'call p90 ms':>12} {'prepare p50 ms':>15} "
          f"{'new conn ms':>12} {'kept conn ms':>13} {'PSS/fn MB':>10}")
    for r in calls:
        print(f"{r['label']:<17} {r['callMedianMs']:>12.2f} {r['callP90Ms']:>12.2f} {r['prepareMedianMs']:>15.0f} "
              f"{r['requestMedianMs']:>12.3f} {r['keptRequestMedianMs']:>13.3f} {r['pssPerFunctionMb']:>10.1f}")
    old, new = calls[1], calls[2]
    print(f"network namespace, per warm call: {new['callMedianMs'] - old['callMedianMs']:+.2f} ms "
          f"({new['callMedianMs'] / old['callMedianMs']:.2f}x); per zygote start: "
          f"{new['prepareMedianMs'] - old['prepareMedianMs']:+.0f} ms; per request to the API against "
          f"straight TCP: {new['requestMedianMs'] - old['requestMedianMs']:+.3f} ms on a new connection, "
          f"{new['keptRequestMedianMs'] - old['keptRequestMedianMs']:+.3f} ms on a kept one")
    print()
    print(f"builds of one requirement, medians of {args.builds} (cache misses, a bare baseline)")
    print(f"{'what':<46} {'before ms':>10} {'now ms':>8} {'ratio':>6}")
    rows = [
        ("local PEP 517 package (host -> function's sandbox)", builds["local-host"], builds["local-sandbox"]),
        ("wheel from an index (direct -> egress proxy)", builds["wheel-direct"], builds["wheel-proxy"]),
    ]
    for what, a, b in rows:
        print(f"{what:<46} {a:>10.0f} {b:>8.0f} {b / a:>6.2f}")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "isolation.json").write_text(json.dumps({"calls": calls, "builds": builds}, indent=2))


if __name__ == "__main__":
    main()
