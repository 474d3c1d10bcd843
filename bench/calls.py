"""Call latency, throughput and memory, against a real server, with baselines from the same run.

    uv run python bench/calls.py [--warm 200] [--cold 10] [--seconds 10] [--extra 10]

Measures, on a trivial handler (``def handle(data): return data``):

- server-side, accepted → ended: the call row's ``endTime - startTime`` (ms resolution: the
  row is written on accept, ``endTime`` is when the call's process ended);
- end to end over HTTP with fnhost's server-side wait: ``POST /sessions`` (the nonce every
  call needs) + ``POST /functions/{id}/call`` + ``POST …/calls/{id}/wait``, keep-alive;
- end to end with the official SDK, ``func.call()``, which creates the session and polls;
- cold: the first call of a function just after it became Ready (also through the SDK);
- throughput with 1, 8 and 64 concurrent clients for ``--seconds`` each, every response checked;
- memory (PSS of the server and all its children): idle, and per extra Ready function that
  shares the baseline environment.

Baselines in the same run: ``python -c pass``, a fresh interpreter importing
``cognite.client``, and a bare ``fork()`` of a warm process. Everything runs once per
``--isolation`` (default ``auto`` then ``none``), printed side by side; the bars of the
call-cost issue are checked on the first. Writes ``bench/results/calls.json``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Api,
    Bar,
    baselines,
    live_server,
    print_bars,
    pss_bytes,
    summary,
    write_results,
    zip_of,
)

TRIVIAL = zip_of({"handler.py": "def handle(data):\n    return data\n"})


def server_side(call: dict[str, Any]) -> float:
    return (call["endTime"] - call["startTime"]) / 1000


def timed_calls(api: Api, function_id: int, runs: int) -> tuple[list[float], list[float]]:
    e2e, server = [], []
    for i in range(runs):
        started = time.perf_counter()
        call = api.call_and_wait(function_id, {"i": i})
        e2e.append(time.perf_counter() - started)
        assert call["status"] == "Completed", call
        server.append(server_side(call))
    return e2e, server


def throughput(creds: dict[str, Any], function_id: int, clients: int, seconds: float) -> dict[str, Any]:
    apis = [Api(creds) for _ in range(clients)]
    counts = [0] * clients
    wrong: list[str] = []
    latencies: list[list[float]] = [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    deadline = [0.0]

    def client(k: int) -> None:
        api = apis[k]
        start.wait()
        n = 0
        while time.perf_counter() < deadline[0]:
            data = {"client": k, "n": n}
            began = time.perf_counter()
            call = api.call_and_wait(function_id, data)
            latencies[k].append(time.perf_counter() - began)
            if call["status"] != "Completed":
                wrong.append(f"call {call['id']}: {call['status']} {call.get('error')}")
            elif api.get(f"/functions/{function_id}/calls/{call['id']}/response")["response"] != data:
                wrong.append(f"call {call['id']}: wrong response")
            n += 1
        counts[k] = n

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    total = sum(counts)
    return {
        "clients": clients,
        "calls": total,
        "seconds": elapsed,
        "calls_per_s": total / elapsed,
        "wrong": wrong,
        "latency": summary([x for per in latencies for x in per]),
    }


def measure(isolation: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure, on one server with ``FNHOST_ISOLATION=isolation``."""
    with live_server(env={"FNHOST_ISOLATION": isolation}) as live:
        creds = live.create_client("bench")
        api = Api(creds)
        assert live.proc is not None
        time.sleep(2)
        idle = pss_bytes(live.proc.pid)

        fid = api.deploy("trivial", TRIVIAL)
        api.call_and_wait(fid, {})  # the first call of this one is not part of any figure
        time.sleep(2)
        one = pss_bytes(live.proc.pid)
        extra_ids = [api.deploy(f"extra-{i}", TRIVIAL) for i in range(args.extra)]
        for extra in extra_ids:  # warm: each function's zygote and its spare call process
            api.call_and_wait(extra, {})
        time.sleep(2)
        more = pss_bytes(live.proc.pid)
        per_extra = (more - one) / args.extra

        warm_e2e, warm_server = timed_calls(api, fid, args.warm)
        nonce_times = []
        for _ in range(args.warm):
            began = time.perf_counter()
            api.nonce()
            nonce_times.append(time.perf_counter() - began)

        sdk = live.client(creds)
        cold_e2e, cold_server, cold_sdk = [], [], []
        for i in range(args.cold):
            cid = api.deploy(f"cold-{i}", TRIVIAL)
            e2e, server = timed_calls(api, cid, 1)
            cold_e2e += e2e
            cold_server += server
            sid = api.deploy(f"cold-sdk-{i}", TRIVIAL)
            first = sdk.functions.retrieve(id=sid)
            began = time.perf_counter()
            call = first.call({"i": i})
            cold_sdk.append(time.perf_counter() - began)
            assert call.status == "Completed", call.error

        func = sdk.functions.retrieve(id=fid)
        sdk_times = []
        for i in range(args.sdk):
            began = time.perf_counter()
            call = func.call({"i": i})
            sdk_times.append(time.perf_counter() - began)
            assert call.status == "Completed", call.error

        levels = [throughput(creds, fid, n, args.seconds) for n in (1, 8, 64)]
        for api_id in extra_ids:
            api.post("/functions/delete", {"items": [{"id": api_id}]})
        base = baselines(20)
    return {
        "isolation": isolation,
        "rows": {
            "warm, server-side accepted -> ended": summary(warm_server),
            "warm, end to end (session + call + server-side wait)": summary(warm_e2e),
            "  of which POST /sessions (the nonce)": summary(nonce_times),
            "cold (first call after Ready), server-side": summary(cold_server),
            "cold (first call after Ready), end to end": summary(cold_e2e),
            "cold, cognite-sdk func.call() (first call after Ready)": summary(cold_sdk),
            "warm, cognite-sdk func.call() (session + call)": summary(sdk_times),
            **{name: summary(values) for name, values in base.items()},
        },
        "throughput": levels,
        "memory_bytes": {"idle": idle, "one_function": one, "per_extra_function": per_extra},
    }


FORK = "baseline: bare fork of a warm process (pipe, reap)"


def bars(result: dict[str, Any]) -> list[Bar]:
    rows, levels = result["rows"], {lv["clients"]: lv for lv in result["throughput"]}
    fork_ms = rows[FORK]["median"] * 1000
    return [
        Bar("warm trivial call, cognite-sdk func.call()", rows["warm, cognite-sdk func.call() (session + call)"]["median"] * 1000,
            "ms", "bare fork of a warm process", fork_ms, "ms", 4),
        Bar("first call after Ready, cognite-sdk func.call()",
            rows["cold, cognite-sdk func.call() (first call after Ready)"]["median"] * 1000,
            "ms", "bare fork of a warm process", fork_ms, "ms", 6),
        Bar("trivial calls/s, 8 clients (x bare fork ms)", levels[8]["calls_per_s"], "/s",
            "bare fork of a warm process", fork_ms, "ms", 600, at_least=True, product=True),
        Bar("trivial calls/s, 64 clients (x bare fork ms)", levels[64]["calls_per_s"], "/s",
            "bare fork of a warm process", fork_ms, "ms", 500, at_least=True, product=True),
        Bar("PSS per extra Ready function sharing an environment",
            result["memory_bytes"]["per_extra_function"] / 2**20, "MB", "(a fixed bar)", 1.0, "", 15),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm", type=int, default=200, help="sequential warm calls")
    parser.add_argument("--cold", type=int, default=10, help="functions whose first call is timed")
    parser.add_argument("--sdk", type=int, default=50, help="calls through cognite-sdk's func.call()")
    parser.add_argument("--seconds", type=float, default=10, help="per throughput level")
    parser.add_argument("--extra", type=int, default=10, help="extra Ready functions for the memory figure")
    parser.add_argument(
        "--isolation", default="auto,none",
        help="FNHOST_ISOLATION of the servers, comma-separated (the bars are the first's)",
    )
    args = parser.parse_args()
    results = [measure(iso, args) for iso in args.isolation.split(",")]

    labels = [r["isolation"] for r in results]
    print("\nCall latency (trivial handler), medians and p90 in ms, by FNHOST_ISOLATION\n")
    print(f"{'case':58}" + "".join(f" {label + ' p50':>11} {'p90':>8}" for label in labels))
    for name in results[0]["rows"]:
        cells = "".join(
            f" {r['rows'][name]['median'] * 1000:11.2f} {r['rows'][name]['p90'] * 1000:8.2f}" for r in results
        )
        print(f"{name:58}{cells}")
    for r in results:
        fork = r["rows"][FORK]["median"]
        warm = r["rows"]["warm, end to end (session + call + server-side wait)"]["median"]
        print(f"ratios ({r['isolation']}): warm end to end / bare fork = {warm / fork:.1f}x")

    print(f"\nThroughput (trivial calls, {args.seconds:.0f} s per level, every response checked)\n")
    print(f"{'clients':>8}" + "".join(f" {label + ' calls/s':>16} {'p50 ms':>8} {'p99 ms':>8} {'wrong':>6}" for label in labels))
    for i, clients in enumerate((1, 8, 64)):
        cells = ""
        for r in results:
            lv = r["throughput"][i]
            cells += (f" {lv['calls_per_s']:16.1f} {lv['latency']['median'] * 1000:8.1f} "
                      f"{lv['latency']['p99'] * 1000:8.1f} {len(lv['wrong']):6d}")
        print(f"{clients:8d}{cells}")

    mb = 1024 * 1024
    print("\nMemory (PSS of the server and its children)\n")
    print(f"{'':38}" + "".join(f" {label:>10}" for label in labels))
    for key, name in (("idle", "server idle, no function"), ("one_function", "one Ready function"),
                      ("per_extra_function", "per extra Ready function, shared env")):
        print(f"{name:38}" + "".join(f" {r['memory_bytes'][key] / mb:8.1f}MB" for r in results))

    print_bars(f"calls, FNHOST_ISOLATION={results[0]['isolation']}", bars(results[0]))
    path = write_results(
        "calls",
        [
            {
                **{k: v for k, v in r.items() if k != "throughput"},
                "throughput": [{k: v for k, v in lv.items() if k != "wrong"} | {"wrong": len(lv["wrong"])}
                               for lv in r["throughput"]],
            }
            for r in results
        ],
    )
    wrong = [w for r in results for lv in r["throughput"] for w in lv["wrong"]]
    for w in wrong[:5]:
        print("WRONG:", w)
    print(f"\nwritten to {path}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
