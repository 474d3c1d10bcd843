"""Call latency, throughput and memory, against a real server, with baselines from the same run.

    uv run python bench/calls.py [--warm 200] [--cold 10] [--seconds 10] [--extra 10]

Measures, on a trivial handler (``def handle(data): return data``):

- server-side, accepted → ended: the call row's ``endTime - startTime`` (ms resolution: the
  row is written on accept, ``endTime`` is when the call's process ended);
- end to end over HTTP with fnhost's server-side wait: ``POST /sessions`` (the nonce every
  call needs) + ``POST /functions/{id}/call`` + ``POST …/calls/{id}/wait``, keep-alive;
- end to end with the official SDK, ``func.call()``, which creates the session and polls;
- cold: the first call of a function just after it became Ready;
- throughput with 1, 8 and 64 concurrent clients for ``--seconds`` each, every response checked;
- memory (PSS of the server and all its children): idle, and per extra Ready function that
  shares the baseline environment.

Baselines in the same run: ``python -c pass``, a fresh interpreter importing
``cognite.client``, and a bare ``fork()`` of a warm process. Writes ``bench/results/calls.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Api,
    baselines,
    live_server,
    print_table,
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm", type=int, default=200, help="sequential warm calls")
    parser.add_argument("--cold", type=int, default=10, help="functions whose first call is timed")
    parser.add_argument("--sdk", type=int, default=50, help="calls through cognite-sdk's func.call()")
    parser.add_argument("--seconds", type=float, default=10, help="per throughput level")
    parser.add_argument("--extra", type=int, default=10, help="extra Ready functions for the memory figure")
    parser.add_argument(
        "--isolation", default="auto", help="FNHOST_ISOLATION of the server: auto, bwrap, uid or none"
    )
    args = parser.parse_args()

    with live_server(env={"FNHOST_ISOLATION": args.isolation}) as live:
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
        time.sleep(2)
        more = pss_bytes(live.proc.pid)
        per_extra = (more - one) / args.extra

        warm_e2e, warm_server = timed_calls(api, fid, args.warm)
        nonce_times = []
        for _ in range(args.warm):
            began = time.perf_counter()
            api.nonce()
            nonce_times.append(time.perf_counter() - began)

        cold_e2e, cold_server = [], []
        for i in range(args.cold):
            cid = api.deploy(f"cold-{i}", TRIVIAL)
            e2e, server = timed_calls(api, cid, 1)
            cold_e2e += e2e
            cold_server += server

        sdk = live.client(creds)
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

    rows: list[tuple[str, dict[str, float] | None, str]] = [
        ("warm, server-side accepted -> ended", summary(warm_server), "bar: median <= 10 ms"),
        ("warm, end to end (session + call + server-side wait)", summary(warm_e2e), "bar: median <= 20 ms"),
        ("  of which POST /sessions (the nonce)", summary(nonce_times), ""),
        ("cold (first call after Ready), server-side", summary(cold_server), ""),
        ("cold (first call after Ready), end to end", summary(cold_e2e), "bar: median <= 50 ms"),
        ("cognite-sdk func.call() (session + call + SDK polling)", summary(sdk_times), ""),
    ]
    rows += [(name, summary(values), "") for name, values in base.items()]
    print_table("Call latency (trivial handler)", rows)
    fork = statistics.median(base["baseline: bare fork of a warm process (pipe, reap)"])
    cold_import = statistics.median(base["baseline: fresh python importing cognite.client"])
    print(
        f"\nratios: warm server-side / bare fork = {statistics.median(warm_server) / fork:.1f}x; "
        f"warm end to end / bare fork = {statistics.median(warm_e2e) / fork:.1f}x; "
        f"fresh interpreter importing cognite.client / warm end to end = "
        f"{cold_import / statistics.median(warm_e2e):.0f}x"
    )

    print(f"\nThroughput (trivial calls, {args.seconds:.0f} s per level, every response checked)\n")
    print(f"{'clients':>8} {'calls':>7} {'calls/s':>9} {'median ms':>10} {'p99 ms':>8} {'wrong':>6}")
    for lv in levels:
        print(
            f"{lv['clients']:8d} {lv['calls']:7d} {lv['calls_per_s']:9.1f} {lv['latency']['median'] * 1000:10.1f} "
            f"{lv['latency']['p99'] * 1000:8.1f} {len(lv['wrong']):6d}"
        )
    print("bar: >= 200 calls/s with 8 clients, every call Completed")

    mb = 1024 * 1024
    print(f"\nMemory (PSS of the server and its children; FNHOST_ISOLATION={args.isolation})\n")
    print(f"server idle, no function:            {idle / mb:8.1f} MB")
    print(f"one Ready function (env + zygotes):  {one / mb:8.1f} MB")
    print(f"per extra Ready function, shared env: {per_extra / mb:7.1f} MB   bar: <= 20 MB")

    path = write_results(
        "calls",
        {
            "warm_server_s": summary(warm_server),
            "warm_e2e_s": summary(warm_e2e),
            "nonce_s": summary(nonce_times),
            "cold_server_s": summary(cold_server),
            "cold_e2e_s": summary(cold_e2e),
            "sdk_call_s": summary(sdk_times),
            "throughput": [{k: v for k, v in lv.items() if k != "wrong"} | {"wrong": len(lv["wrong"])} for lv in levels],
            "isolation": args.isolation,
            "memory_bytes": {"idle": idle, "one_function": one, "per_extra_function": per_extra},
            "baselines_s": {k: summary(v) for k, v in base.items()},
        },
    )
    for lv in levels:
        for w in lv["wrong"][:5]:
            print("WRONG:", w)
    print(f"\nwritten to {path}")
    return 1 if any(lv["wrong"] for lv in levels) else 0


if __name__ == "__main__":
    sys.exit(main())
