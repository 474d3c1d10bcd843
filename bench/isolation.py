"""What isolation costs: call latency and zygote start, sandboxed against unisolated.

    uv run python bench/isolation.py [--calls 300] [--functions 5]

Runs the local executor itself (no HTTP) once per mechanism, in the same process, with
this project's interpreter (which has cognite-sdk) and a trivial handler. For each:

- warm call: ``submit`` → outcome of ``handle(data) -> data``, sequential, medians and p90;
- prepare: starting the function's zygote (import of the handler; with isolation also the
  sandbox and an interpreter that imports cognite.client, which unisolated is shared);
- PSS of a function's warm processes (zygote, plus its own environment zygote when isolated).

Prints a table; writes ``bench/results/isolation.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from fnhost.run.abc import CallJob  # noqa: E402
from fnhost.run.local import LocalExecutor  # noqa: E402

PYTHON = str(REPO / ".venv" / "bin" / "python")
HANDLER = "def handle(data):\n    return data\n"


class Env:
    hash = "bench-env"
    python = PYTHON
    site_dirs: list[str] = []


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(mechanism: str, calls: int, functions: int, root: Path) -> dict[str, Any]:
    ex = LocalExecutor(isolation=mechanism)
    ex.start()
    try:
        dirs = []
        prepare_ms = []
        for i in range(functions):
            d = root / mechanism / "code" / str(100 + i)
            d.mkdir(parents=True)
            (d / "handler.py").write_text(HANDLER)
            t0 = time.perf_counter()
            result = ex.prepare(Env(), d, "handler.py")
            prepare_ms.append((time.perf_counter() - t0) * 1000)
            assert result.ok, result
            dirs.append(d)
        latencies = []
        for n in range(calls):
            d = dirs[n % len(dirs)]
            job = CallJob(call_id=n + 1, function_id=int(d.name), project="p", env=Env(), code_dir=d,
                          function_path="handler.py", data={"n": n})
            t0 = time.perf_counter()
            out = ex.submit(job).result(60)
            latencies.append((time.perf_counter() - t0) * 1000)
            assert out.status == "Completed" and json.loads(out.response or "{}") == {"n": n}, out
        stats = ex.stats()
        pss = [f["pss"] for f in stats["functions"].values()]
        return {
            "mechanism": ex.isolation.mechanism,
            "privateTmp": ex.isolation.private_tmp,
            "callMedianMs": statistics.median(latencies),
            "callP90Ms": pct(latencies, 0.9),
            "prepareFirstMs": prepare_ms[0],
            "prepareMedianMs": statistics.median(prepare_ms),
            "pssPerFunctionMb": statistics.median(pss) / 1024**2 if pss else 0.0,
        }
    finally:
        ex.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--functions", type=int, default=5)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="fnhost-bench-iso-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)
        for mechanism in ("none", "bwrap"):
            results.append(measure(mechanism, args.calls, args.functions, root))
    print(f"{args.calls} sequential warm calls over {args.functions} functions; prepare = zygote start")
    print(f"{'isolation':<10} {'call p50 ms':>12} {'call p90 ms':>12} {'prepare 1st ms':>15} "
          f"{'prepare p50 ms':>15} {'PSS/fn MB':>10}")
    for r in results:
        print(f"{r['mechanism']:<10} {r['callMedianMs']:>12.2f} {r['callP90Ms']:>12.2f} "
              f"{r['prepareFirstMs']:>15.0f} {r['prepareMedianMs']:>15.0f} {r['pssPerFunctionMb']:>10.1f}")
    base, iso = results
    print(f"warm call cost of bwrap isolation: {iso['callMedianMs'] - base['callMedianMs']:+.2f} ms (median)")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "isolation.json").write_text(json.dumps({"calls": args.calls, "results": results}, indent=2))


if __name__ == "__main__":
    main()
