"""Load: N clients call trivial functions for a fixed time; then every call is checked.

    uv run python bench/load.py [--clients 8] [--seconds 30] [--functions 2] [--isolation auto]

Starts ``fnhost serve`` on a free port (its own home; environments shared with the tests),
deploys ``--functions`` echo functions, then runs ``--clients`` threads, each with its own
principal and official ``CogniteClient``. Each client loops until the time is up: call a
function (``functions.call(..., wait=False)``: a session nonce, then the call), wait for it
to end with the server-side long poll (``GET …/calls/{id}?waitSeconds=``), read its
response, and compare it with what it sent. Afterwards, every accepted call is looked up
again through the API:

- accepted: calls the server answered with a call id;
- ended: of those, calls in a terminal status (Completed, Failed, Timeout);
- wrong: ended calls that did not complete, or whose response is not what was sent;
- lost: accepted calls that never ended, or that the API no longer knows;
- sustained calls/s: calls that ended within the window, per second of the window;
- latency: from just before ``functions.call`` to the response read, p50 and p99.

Prints a table; writes ``bench/results/load.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cognite.client import CogniteClient  # noqa: E402
from tests.live import LiveServer  # noqa: E402

TERMINAL = ("Completed", "Failed", "Timeout")


def handle(data):  # type: ignore[no-untyped-def]  # deployed with function_handle
    return {"echo": data}


@dataclass
class Sent:
    function_id: int
    call_id: int
    data: dict[str, Any]
    started: float
    latency: float | None = None  # seconds, when the client saw the right response
    ended_in_window: bool = False
    problem: str | None = None


@dataclass
class ClientResult:
    sent: list[Sent] = field(default_factory=list)
    refused: int = 0  # call requests that got no call id (errors before acceptance)
    errors: list[str] = field(default_factory=list)


def run_client(client: CogniteClient, functions: list[Any], index: int, deadline: float) -> ClientResult:
    out = ClientResult()
    project = client.config.project
    n = 0
    while time.monotonic() < deadline:
        fn = functions[n % len(functions)]
        data = {"client": index, "n": n, "token": uuid.uuid4().hex}
        n += 1
        t0 = time.monotonic()
        try:
            call = client.functions.call(id=fn.id, data=data, wait=False)
        except Exception as exc:
            out.refused += 1
            out.errors.append(f"call: {type(exc).__name__}: {exc}"[:300])
            continue
        sent = Sent(fn.id, call.id, data, t0)
        out.sent.append(sent)
        try:
            status = call.status
            while status not in TERMINAL:
                body = client.get(
                    f"/api/v1/projects/{project}/functions/{fn.id}/calls/{call.id}", params={"waitSeconds": 30}
                ).json()
                status = body["status"]
            response = client.functions.calls.get_response(call_id=call.id, function_id=fn.id)
            if status == "Completed" and response == {"echo": data}:
                sent.latency = time.monotonic() - t0
                sent.ended_in_window = time.monotonic() <= deadline
            else:
                sent.problem = f"{status}: {response!r}"[:300]
        except Exception as exc:  # checked again at the end: the call may still be fine
            out.errors.append(f"wait: {type(exc).__name__}: {exc}"[:300])
    return out


def verify(client: CogniteClient, sent: list[Sent]) -> dict[str, int]:
    """Look every accepted call up again: did it end, and with the right response?"""
    ended = wrong = lost = 0
    for s in sent:
        call = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            call = client.functions.calls.retrieve(call_id=s.call_id, function_id=s.function_id)
            if call is None or call.status in TERMINAL:
                break
            time.sleep(0.5)
        if call is None or call.status not in TERMINAL:
            lost += 1
            continue
        ended += 1
        response = call.get_response() if call.status == "Completed" else None
        if call.status != "Completed" or response != {"echo": s.data}:
            wrong += 1
    return {"ended": ended, "wrong": wrong, "lost": lost}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--functions", type=int, default=2)
    parser.add_argument("--isolation", default="auto")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fnhost-load-") as tmp:
        live = LiveServer(Path(tmp) / "home", env={"FNHOST_ISOLATION": args.isolation}).start()
        try:
            admin = live.client(live.create_client("load-admin"))
            functions = [admin.functions.create(name=f"load-{i}", function_handle=handle) for i in range(args.functions)]
            for fn in functions:
                while fn.status in ("Queued", "Deploying"):
                    time.sleep(0.2)
                    fn.update()
                assert fn.status == "Ready", fn.error
            isolation = next((ln.split("isolation ", 1)[1].split(":")[0] for ln in live.log().splitlines()
                              if "local executor: isolation" in ln), "?")
            clients = [live.client(live.create_client(f"load-{i}")) for i in range(args.clients)]
            for c in clients:  # tokens fetched before the clock starts
                c.iam.token.inspect()
            lock = threading.Lock()
            results: list[ClientResult] = []
            t_start = time.monotonic()
            deadline = t_start + args.seconds
            with ThreadPoolExecutor(args.clients) as pool:
                futures = [pool.submit(run_client, c, functions, i, deadline) for i, c in enumerate(clients)]
                for f in futures:
                    with lock:
                        results.append(f.result())
            elapsed_all = time.monotonic() - t_start
            sent = [s for r in results for s in r.sent]
            checked = verify(admin, sent)
        finally:
            live.stop()

    latencies = [s.latency for s in sent if s.latency is not None]
    in_window = sum(1 for s in sent if s.ended_in_window)
    report = {
        "clients": args.clients,
        "seconds": args.seconds,
        "functions": args.functions,
        "isolation": isolation,
        "accepted": len(sent),
        "ended": checked["ended"],
        "wrong": checked["wrong"],
        "lost": checked["lost"],
        "refusedBeforeAcceptance": sum(r.refused for r in results),
        "clientErrors": [e for r in results for e in r.errors][:10],
        "clientSawWrong": sum(1 for s in sent if s.problem),
        "sustainedCallsPerSecond": in_window / args.seconds,
        "latencyP50Ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "latencyP99Ms": percentile(latencies, 0.99) * 1000,
        "elapsedSeconds": elapsed_all,
    }
    print(f"load: {args.clients} clients, {args.seconds:g} s, {args.functions} functions, isolation {isolation}")
    for key in ("accepted", "ended", "wrong", "lost", "refusedBeforeAcceptance", "clientSawWrong"):
        print(f"  {key:<26} {report[key]}")
    print(f"  {'sustained calls/s':<26} {report['sustainedCallsPerSecond']:.1f}")
    print(f"  {'latency p50 ms':<26} {report['latencyP50Ms']:.1f}")
    print(f"  {'latency p99 ms':<26} {report['latencyP99Ms']:.1f}")
    if report["clientErrors"]:
        print("  client errors (first 10):", *report["clientErrors"], sep="\n    ")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "load.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
