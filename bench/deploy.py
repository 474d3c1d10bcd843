"""Deploy time, create → Ready, measured with the official cognite-sdk against a real server.

    uv run python bench/deploy.py [--runs 20]

Starts ``fnhost serve`` on a free port (its own home, environments in
``bench/results/envs``), serves a package index on 127.0.0.1, and times, per run, from just
before ``client.functions.create(file_id=…)`` until ``POST /functions/byids`` (polled every
10 ms) reports Ready. Cases:

- no requirements, a handler that imports nothing heavy (the handle-mode shape);
- no requirements, a handler that imports ``cognite.client`` at module level;
- cached requirements: a requirements.txt already installed by an earlier deploy.

Baselines measured in the same run with the baseline environment's interpreter:
``python -c pass`` and a fresh interpreter importing ``cognite.client``. Prints a table and
writes ``bench/results/deploy.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, Bar, base_python, pct, print_bars, time_process, zip_of
from cognite.client import CogniteClient
from tests.live import LiveServer
from tests.pkgindex import PackageIndex


def deploy_once(client: CogniteClient, name: str, file_id: int, **kwargs: Any) -> tuple[float, int]:
    started = time.perf_counter()
    fn = client.functions.create(name=name, file_id=file_id, **kwargs)
    while True:
        got = client.functions.retrieve(id=fn.id)
        if got is not None and got.status in ("Ready", "Failed"):
            elapsed = time.perf_counter() - started
            if got.status == "Failed":
                raise RuntimeError(f"{name} failed: {got.error}")
            return elapsed, fn.id
        time.sleep(0.01)


def measure(client: CogniteClient, name: str, file_id: int, runs: int, **kwargs: Any) -> list[float]:
    times = []
    for i in range(runs):
        elapsed, fid = deploy_once(client, f"{name}-{i}", file_id, **kwargs)
        times.append(elapsed)
        client.functions.delete(id=fid)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)

    index = PackageIndex()
    index.add("fnhost-benchpkg", "1.0.0", {"fnhost_benchpkg/__init__.py": "VALUE = 1\n"})
    with tempfile.TemporaryDirectory(prefix="fnhost-bench-") as home:
        live = LiveServer(Path(home), env={"FNHOST_ENV_DIR": str(RESULTS / "envs")})
        live.start()
        try:
            client = live.client(live.create_client("bench"))
            light = client.files.upload_bytes(
                zip_of({"handler.py": "def handle(client, data):\n    return data\n"}), name="light.zip"
            ).id
            heavy = client.files.upload_bytes(
                zip_of({
                    "handler.py": "from cognite.client import CogniteClient\n\n"
                    "def handle(client: CogniteClient, data):\n    return data\n"
                }),
                name="heavy.zip",
            ).id
            reqs = client.files.upload_bytes(
                zip_of({
                    "handler.py": "import fnhost_benchpkg\n\ndef handle(data):\n    return fnhost_benchpkg.VALUE\n",
                    "requirements.txt": "fnhost-benchpkg==1.0.0\n",
                }),
                name="reqs.zip",
            ).id

            # warm up: the baseline environment exists before anything is timed
            deploy_once(client, "warmup", light)
            first_reqs, fid = deploy_once(client, "reqs-first", reqs, index_url=index.url)
            client.functions.delete(id=fid)

            cases: dict[str, Callable[[], list[float]]] = {
                "no requirements (light handler)": lambda: measure(client, "light", light, args.runs),
                "no requirements (imports cognite.client)": lambda: measure(client, "heavy", heavy, args.runs),
                "cached requirements": lambda: measure(
                    client, "reqs", reqs, args.runs, index_url=index.url
                ),
            }
            results = {name: run() for name, run in cases.items()}
            python = base_python()
            results["baseline: python -c pass"] = time_process([python, "-c", "pass"], args.runs)
            results["baseline: fresh python importing cognite.client"] = time_process(
                [python, "-c", "import cognite.client"], max(5, args.runs // 2)
            )
        finally:
            live.stop()
            index.close()

    import_ms = statistics.median(results["baseline: fresh python importing cognite.client"]) * 1000
    print(f"\nDeploy create -> Ready ({args.runs} runs each; first, uncached requirements "
          f"build: {first_reqs * 1000:.0f} ms)\n")
    print(f"{'case':48} {'median ms':>10} {'p90 ms':>8} {'vs import':>10}")
    summary = {}
    for name, values in results.items():
        med, p90 = statistics.median(values) * 1000, pct(values, 0.9) * 1000
        summary[name] = {"median_ms": round(med, 1), "p90_ms": round(p90, 1), "runs": len(values)}
        print(f"{name:48} {med:10.0f} {p90:8.0f} {med / import_ms:9.2f}x")
    summary["uncached requirements (first build)"] = {"ms": round(first_reqs * 1000, 1)}
    (RESULTS / "deploy.json").write_text(json.dumps(summary, indent=2))
    fresh = "fresh interpreter importing cognite.client"

    def median_ms(name: str) -> float:
        return statistics.median(results[name]) * 1000

    print_bars(
        "deploy, create -> Ready",
        [
            Bar("no requirements (light handler)", median_ms("no requirements (light handler)"), "ms",
                fresh, import_ms, "ms", 0.3),
            Bar("no requirements (imports cognite.client)", median_ms("no requirements (imports cognite.client)"),
                "ms", fresh, import_ms, "ms", 0.3),
            Bar("cached requirements", median_ms("cached requirements"), "ms", fresh, import_ms, "ms", 0.3),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
