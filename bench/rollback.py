"""Rollback: from the rollback request to the first call served by the old version.

    uv run python bench/rollback.py [--runs 10]

Starts ``fnhost serve`` on a free port (environments in ``bench/results/envs``), creates a
function (version 1), deploys version 2 through ``POST …/functions/{id}/versions`` and waits
until it is current. Then, ``--runs`` times each way, it rolls back to the other version and
times from just before ``POST …/versions/rollback`` until a call (session, call, server-side
wait) has returned Completed on the version rolled back to; the response's marker is
checked to be that version's. The version rolled away from has had its warm process retired
by then, as a real rollback finds it.

Baseline, same run: a warm call's round trip (session, call, wait) on the current version.
The bar is absolute (issue 20): at most 1 s. Prints a table and writes
``bench/results/rollback.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, Api, live_server, print_table, summary, zip_of

BAR_S = 1.0


def code(marker: str) -> bytes:
    return zip_of({"handler.py": f"MARKER = {marker!r}\n\ndef handle(data):\n    return MARKER\n"})


def upload(api: Api, name: str, content: bytes) -> int:
    file = api.post("/files", {"name": name})
    url = file["uploadUrl"]
    api.http.put(url if "://" in url else api.base_url + url, content=content).raise_for_status()
    return int(file["id"])


def served_by(api: Api, fid: int, call: dict[str, object]) -> str:
    return str(api.get(f"/functions/{fid}/calls/{call['id']}/response")["response"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with live_server() as live:
        api = Api(live.create_client("bench"))
        fid = api.deploy("rollback", code("v1"))
        api.post(f"/functions/{fid}/versions", {"items": [{"fileId": upload(api, "v2.zip", code("v2"))}]})
        deadline = time.monotonic() + 300
        while api.get(f"/functions/{fid}")["version"] != 2:
            if time.monotonic() > deadline:
                raise RuntimeError("version 2 did not become current")
            time.sleep(0.02)
        for _ in range(5):  # warm up the call path
            api.call_and_wait(fid, {})

        warm: list[float] = []
        rollbacks: list[float] = []
        requests: list[float] = []
        current = 2
        for _ in range(args.runs * 2):
            for _ in range(3):
                started = time.perf_counter()
                call = api.call_and_wait(fid, {})
                warm.append(time.perf_counter() - started)
                assert call["status"] == "Completed" and served_by(api, fid, call) == f"v{current}", call
            target = 1 if current == 2 else 2
            started = time.perf_counter()
            api.post(f"/functions/{fid}/versions/rollback", {"version": target})
            requests.append(time.perf_counter() - started)
            call = api.call_and_wait(fid, {})
            rollbacks.append(time.perf_counter() - started)
            if call["status"] != "Completed" or call.get("functionVersion") != target:
                raise RuntimeError(f"the first call after rolling back to {target} was {call}")
            if served_by(api, fid, call) != f"v{target}":
                raise RuntimeError(f"the first call after rolling back to {target} ran other code")
            current = target
            time.sleep(0.2)

    print_table(
        f"Rollback, request -> first call served by the version rolled back to ({len(rollbacks)} rollbacks)",
        [
            ("rollback request -> first call on the old version", summary(rollbacks), "the figure"),
            ("  of which the rollback request itself", summary(requests), ""),
            ("baseline: warm call round trip (session, call, wait)", summary(warm), "same run"),
        ],
    )
    median = statistics.median(rollbacks)
    base = statistics.median(warm)
    print(f"\nBar: rollback -> first old-version call median {median * 1000:.1f} ms "
          f"(p90 {sorted(rollbacks)[int(0.9 * (len(rollbacks) - 1))] * 1000:.1f} ms) <= {BAR_S * 1000:.0f} ms: "
          f"{'yes' if max(rollbacks) <= BAR_S else ('median yes, max NO' if median <= BAR_S else 'NO')}; "
          f"{median / base:.1f}x a warm call's round trip ({base * 1000:.1f} ms)")
    (RESULTS / "rollback.json").write_text(json.dumps({
        "rollback_to_first_call_ms": {k: round(v * 1000, 1) if k != "n" else v for k, v in summary(rollbacks).items()},
        "rollback_request_ms": {k: round(v * 1000, 1) if k != "n" else v for k, v in summary(requests).items()},
        "warm_call_ms": {k: round(v * 1000, 1) if k != "n" else v for k, v in summary(warm).items()},
        "max_rollback_ms": round(max(rollbacks) * 1000, 1),
        "bar_ms": BAR_S * 1000,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
