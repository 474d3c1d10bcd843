"""Scale-out figures: calls per second through one replica versus two on PostgreSQL, and the
latency the Ray executor adds over the local one. Everything is measured in the same run.

    uv run python bench/scaleout.py [--rounds 3] [--seconds 10] [--concurrency 8] [--calls 40]

Sets up, on 127.0.0.1 only: a fresh PostgreSQL database (``fnhost_test_<random>``, dropped at
the end), a local Ray cluster (8 logical CPUs), and three ``fnhost serve`` replicas on that
database with the database blob store: A and B with the local executor, R with the Ray
executor (R2, a second Ray replica, for the Ray throughput rows). One function, deployed
through A, returns its input.

A call is what a user does with the official cognite-sdk: ``functions.call(wait=False)``
(which first makes a session nonce), then fnhost's long-poll ``GET …/calls/{id}?waitSeconds=30``
through the SDK's own transport (the SDK's ``wait()`` polls with a backoff of 0.3 s and more,
which would measure the backoff, not the call).

- latency: sequential calls through one replica, median, local (A) versus Ray (R);
- executor latency: the executors alone in this process (``submit`` → outcome), no HTTP and
  no database: LocalExecutor versus RayExecutor on the same handler;
- throughput: ``--concurrency`` client threads calling for ``--seconds``, all through one
  replica, or split evenly over two (what a load balancer does); median calls/s over rounds.

Prints a table and writes ``bench/results/scaleout.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from tests.raycluster import RAY_ENV, RayCluster  # noqa: E402

for _key, _value in RAY_ENV.items():  # read by ray when imported (the in-process executor)
    os.environ.setdefault(_key, _value)

from _common import zip_of  # noqa: E402
from cognite.client import CogniteClient  # noqa: E402
from tests.live import LiveServer, sdk_client, wait_for  # noqa: E402
from tests.pg import create_database, drop_database  # noqa: E402

from fnhost.run.abc import CallJob, CallLimits, Executor  # noqa: E402
from fnhost.run.local import LocalExecutor  # noqa: E402
from fnhost.run.ray import RayExecutor  # noqa: E402

RESULTS = REPO / "bench" / "results"
HANDLER = "def handle(data):\n    return data\n"


def client_for(server: LiveServer, creds: dict[str, Any]) -> CogniteClient:
    return sdk_client({
        **creds,
        "base_url": server.base_url,
        "token_url": f"{server.base_url}/oauth2/token",
        "scopes": [f"{server.base_url}/.default"],
    }, client_name="fnhost-bench")


def one_call(client: CogniteClient, function_id: int, n: int) -> float:
    """Seconds from ``functions.call`` to the call's end (long poll); raises if not Completed."""
    started = time.perf_counter()
    call = client.functions.call(id=function_id, data={"n": n}, wait=False)
    url = f"/api/v1/projects/{client.config.project}/functions/{function_id}/calls/{call.id}"
    while True:
        body = client.get(url, params={"waitSeconds": 30}).json()
        if body["status"] != "Running":
            break
    elapsed = time.perf_counter() - started
    if body["status"] != "Completed":
        raise RuntimeError(f"call {call.id} ended {body['status']}: {body.get('error')}")
    return elapsed


def sequential(client: CogniteClient, function_id: int, calls: int) -> list[float]:
    return [one_call(client, function_id, i) for i in range(calls)]


def throughput(clients: list[CogniteClient], function_id: int, threads: int, seconds: float) -> float:
    """Completed calls per second with ``threads`` callers spread over ``clients``."""
    done = [0] * threads
    errors: list[BaseException] = []
    deadline = time.perf_counter() + seconds

    def caller(i: int) -> None:
        client = clients[i % len(clients)]
        try:
            while time.perf_counter() < deadline:
                one_call(client, function_id, i)
                done[i] += 1
        except BaseException as exc:
            errors.append(exc)

    started = time.perf_counter()
    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return sum(done) / elapsed


@dataclass(frozen=True)
class Env:
    hash: str
    python: str
    site_dirs: list[str] = field(default_factory=list)


def executor_latency(executor: Executor, code: Path, calls: int) -> list[float]:
    env = Env("bench-env", sys.executable)
    result = executor.prepare(env, code, "handler.py")
    if not result.ok:
        raise RuntimeError(result.message)
    times = []
    for i in range(calls + 3):
        job = CallJob(call_id=10_000 + i, function_id=1, project="bench", env=env, code_dir=code,
                      function_path="handler.py", data={"n": i}, limits=CallLimits(timeout_s=30))
        started = time.perf_counter()
        outcome = executor.submit(job).result(60)
        if outcome.status != "Completed":
            raise RuntimeError(f"executor call failed: {outcome.error}")
        if i >= 3:  # the first calls warm the zygote and, on Ray, the worker and the node host
            times.append(time.perf_counter() - started)
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of one throughput round")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads in throughput rounds")
    parser.add_argument("--calls", type=int, default=40, help="sequential calls per latency round")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fnhost-bench-scaleout-"))
    cluster = RayCluster(num_cpus=8)
    db_name, db_url = create_database()
    servers: list[LiveServer] = []
    in_process: list[Executor] = []
    try:
        print("starting a Ray cluster on 127.0.0.1 …", flush=True)
        cluster.start()
        base = {
            "FNHOST_DATABASE_URL": db_url,
            "FNHOST_BLOB_STORE": "database",
            "FNHOST_LOG_FORMAT": "text",
        }
        ray_env = {**base, "FNHOST_EXECUTOR": "ray", "FNHOST_RAY_ADDRESS": cluster.address}

        def replica(name: str, env: dict[str, str]) -> LiveServer:
            home = work / name
            if servers:  # every replica shares the first one's signing and secrets keys
                shutil.copytree(servers[0].home / "keys", home / "keys")
            live = LiveServer(home, env=env).start(timeout=120)
            servers.append(live)
            return live

        print("starting replicas A, B (local executor), R, R2 (Ray executor) on PostgreSQL …", flush=True)
        a = replica("a", base)
        for name, env in (("b", base), ("r", ray_env), ("r2", ray_env)):
            replica(name, env)
        creds = a.create_client("bench")
        clients = {s.home.name: client_for(s, creds) for s in servers}
        file_id = clients["a"].files.upload_bytes(zip_of({"handler.py": HANDLER}), name="echo.zip").id
        fn = clients["a"].functions.create(name="echo", file_id=file_id)
        wait_for(lambda: clients["b"].functions.retrieve(id=fn.id).status == "Ready", timeout=300,
                 interval=0.2, what="the function to be Ready")
        for c in clients.values():  # warm: zygotes on every replica, Ray workers and node host
            sequential(c, fn.id, 5)
        # and under load: Ray starts a worker process per concurrent task the first time
        throughput([clients["r"], clients["r2"]], fn.id, args.concurrency, args.seconds)
        throughput([clients["a"], clients["b"]], fn.id, args.concurrency, args.seconds)

        latency: dict[str, list[float]] = {"local": [], "ray": []}
        rates: dict[str, list[float]] = {"local-1": [], "local-2": [], "ray-1": [], "ray-2": []}
        for round_no in range(1, args.rounds + 1):
            print(f"round {round_no}/{args.rounds}: latency …", flush=True)
            latency["local"] += sequential(clients["a"], fn.id, args.calls)
            latency["ray"] += sequential(clients["r"], fn.id, args.calls)
            print(f"round {round_no}/{args.rounds}: throughput …", flush=True)
            for key, group in (
                ("local-1", [clients["a"]]),
                ("local-2", [clients["a"], clients["b"]]),
                ("ray-1", [clients["r"]]),
                ("ray-2", [clients["r"], clients["r2"]]),
            ):
                rates[key].append(throughput(group, fn.id, args.concurrency, args.seconds))

        for s in servers:  # the executors alone get the machine to themselves
            s.stop()
        print("executors in process …", flush=True)
        code = work / "code"
        code.mkdir()
        (code / "handler.py").write_text(HANDLER)
        executor_times: dict[str, list[float]] = {}
        for name, ex in (("local", LocalExecutor()), ("ray", RayExecutor(cluster.address))):
            in_process.append(ex)
            ex.start()
            executor_times[name] = executor_latency(ex, code, args.calls * args.rounds)
            ex.stop()
    finally:
        for s in servers:
            s.stop()
        for ex in in_process:
            ex.stop()
        cluster.stop()
        drop_database(db_name)
        shutil.rmtree(work, ignore_errors=True)

    med = statistics.median
    lat_local, lat_ray = med(latency["local"]), med(latency["ray"])
    ex_local, ex_ray = med(executor_times["local"]), med(executor_times["ray"])
    rate = {k: med(v) for k, v in rates.items()}
    rows = [
        ("call latency, local executor (SDK call → end, median)", ms(lat_local), ""),
        ("call latency, Ray executor", ms(lat_ray), f"x{lat_ray / lat_local:.2f} local; +{ms(lat_ray - lat_local)}"),
        ("executor alone, local (submit → outcome, median)", ms(ex_local), ""),
        ("executor alone, Ray", ms(ex_ray), f"x{ex_ray / ex_local:.2f} local; +{ms(ex_ray - ex_local)}"),
        ("calls/s, 1 replica, local executor", f"{rate['local-1']:.1f}", ""),
        ("calls/s, 2 replicas, local executor", f"{rate['local-2']:.1f}", f"x{rate['local-2'] / rate['local-1']:.2f} one"),
        ("calls/s, 1 replica, Ray executor", f"{rate['ray-1']:.1f}", ""),
        ("calls/s, 2 replicas, Ray executor", f"{rate['ray-2']:.1f}", f"x{rate['ray-2'] / rate['ray-1']:.2f} one"),
    ]
    width = max(len(r[0]) for r in rows)
    print()
    print(f"{os.cpu_count()} CPUs; {args.rounds} rounds; {args.calls} sequential calls per latency round; "
          f"{args.concurrency} client threads x {args.seconds:g} s per throughput round")
    print(f"{'measure'.ljust(width)}  {'median':>10}  ratio")
    for name, value, ratio in rows:
        print(f"{name.ljust(width)}  {value:>10}  {ratio}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaleout.json").write_text(json.dumps({
        "args": vars(args),
        "cpus": os.cpu_count(),
        "latency_s": latency,
        "executor_latency_s": executor_times,
        "calls_per_second": rates,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
