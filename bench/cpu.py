"""Where the CPU of a call goes: the figure that bounds throughput on a small machine.

    uv run python bench/cpu.py [--clients 8] [--seconds 4] [--rounds 3] [--isolation auto]

On a box with N cores, no server can complete more than N / (CPU seconds per call) calls a
second, however its work is spread over threads and processes. This script drives trivial
calls (``def handle(data): return data``) with ``--clients`` concurrent keep-alive clients, as
the throughput part of ``bench/calls.py`` does (session + call + server-side wait, every
response checked), and reads from /proc how much CPU each part used per call:

- the server process: HTTP, tokens, capabilities, the database, dispatch;
- the processes below it: environment and function zygotes, sandboxes, each call's process
  (counted with the children they have reaped);
- the clients: this process.

Baselines in the same run, with the same clients: CPU per ``GET /health`` (the HTTP stack
alone: no token, no database), per authenticated ``GET /functions/{id}`` (token check,
capability check, one read), per ``POST /sessions`` alone, and per bare ``fork()`` of a warm
process that has imported ``cognite.client`` (fork, pipe, exit, reap).

This machine's speed drifts by up to 2x from one minute to the next, so the cases and the
bare fork are measured in ``--rounds`` rounds, one after another in each; the table shows each
figure's median over the rounds, and each bar's ratio is the median of the rounds' ratios,
each taken against the baseline of its own round.

It prints the ceiling N / (CPU per call) beside the rate it measured, and the bars of the
call-cost issue, each against its same-run baseline: the server's CPU per call at most 6x a
``GET /health``'s; the CPU below the server at most 1.3x a bare fork's; the calls/s at least
85 % of the ceiling. Writes ``bench/results/cpu.json``.

``--steps`` also samples the server with py-spy (run through ``uvx``) during the trivial
calls and splits the server's CPU per call by the step of the call path each sample was in
(the table in docs/architecture.md, "The call path"). Sampling costs the server a little,
so the figures of that case are read from a run of their own.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BARE_FORK,
    RESULTS,
    Api,
    Bar,
    bare_forks,
    base_python,
    cpu_seconds,
    descendants,
    live_server,
    print_bars,
    write_results,
    zip_of,
)

TRIVIAL = zip_of({"handler.py": "def handle(data):\n    return data\n"})


def health(a: Api, _n: int) -> bool:
    """One ``GET /health``: the HTTP stack alone, the baseline of the server's bar."""
    return a.http.get(a.base_url + "/health").status_code == 200


def trivial_call(fid: int) -> Callable[[Api, int], bool]:
    """A client's request of the call case: session, call and server-side wait, checked."""

    def call(a: Api, n: int) -> bool:
        return a.call_and_wait(fid, {"n": n})["status"] == "Completed"

    return call

def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """CPU seconds of the server process, of everything below it, and of the clients."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid

    def read(self) -> tuple[float, float, float]:
        server = cpu_seconds(self.server_pid, reaped_children=False)
        tree = sum(cpu_seconds(pid, reaped_children=True) for pid in descendants(self.server_pid))
        return server, tree - server, client_cpu()


def drive(
    apis: list[Api], meter: Meter, seconds: float, request: Callable[[Api, int], bool]
) -> dict[str, Any]:
    """Every client repeats ``request`` for ``seconds``; CPU per request of each part."""
    counts = [0] * len(apis)
    wrong = [0] * len(apis)
    stop = threading.Event()

    def client(k: int) -> None:
        n = 0
        while not stop.is_set():
            if not request(apis[k], n):
                wrong[k] += 1
            n += 1
        counts[k] = n

    threads = [threading.Thread(target=client, args=(k,)) for k in range(len(apis))]
    before = meter.read()
    began = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    after = meter.read()
    done = sum(counts)
    if done == 0:
        raise RuntimeError(f"no request finished in {seconds} s")
    server, below, clients = (after[i] - before[i] for i in range(3))
    return {
        "requests": done,
        "per_s": done / elapsed,
        "wrong": sum(wrong),
        "server_ms": server / done * 1000,
        "below_ms": max(below / done * 1000, 0.0),  # no "-0.00" when nothing ran below
        "client_ms": clients / done * 1000,
        "total_ms": (server + below + clients) / done * 1000,
    }


# The steps of the call path, each named by the code that does it: a sample belongs to the
# first rule that matches a frame, read from the innermost frame outwards (so the token check
# inside the call's accept counts as the token check). Patterns match "function (file)".
STEPS: list[tuple[str, str]] = [
    ("token and capability checks", r"fnhost/(services/access|auth/)"),
    ("session: insert (store/direct.py)", r"insert_session \(.*fnhost/store/direct"),
    ("session: create (services/sessions.py)", r"fnhost/services/sessions"),
    ("accept: read, redeem, insert (one transaction)", r"fnhost/(services/calls/accept|store/direct.py)"),
    ("dispatch: admission, job to the zygote", r"fnhost/(services/calls/(dispatch|admission)|run/)"),
    ("wait: the reply's future", r"fnhost/services/calls/(wait|__init__)"),
    ("record: outcome, logs, lastCalled", r"fnhost/services/calls/record"),
    ("edge: body, reply, rate limit (api/)", r"fnhost/(api|core)/"),
    ("HTTP (uvicorn, Starlette, FastAPI)", r"(uvicorn|h11|httptools|starlette|fastapi)/"),
]
# asyncio's own frames name no step: they are whoever called them (the executor handing a
# job to its loop is dispatch), or, with nothing above them, the event loops themselves
EVENT_LOOP = ("event loops (asyncio, nothing of the above on the stack)", r"(asyncio|anyio)/")


def step_of(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, pattern in STEPS:
            if re.search(pattern, frame):
                return name
    if any(re.search(EVENT_LOOP[1], frame) for frame in frames):
        return EVENT_LOOP[0]
    return "other (threads, gc, logging, metrics)"


def sample_steps(pid: int, seconds: float, work: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], dict[str, float]]:
    """``work()`` while py-spy samples ``pid``: its result and each step's share of samples."""
    if shutil.which("uvx") is None:
        raise SystemExit("--steps needs uvx (uv's tool runner) to run py-spy")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw.txt"
        spy = subprocess.Popen(
            ["uvx", "py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
             "--duration", str(int(seconds) + 2), "--output", str(out), "--gil"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        time.sleep(1.5)  # py-spy attached before the calls start
        result = work()
        spy.wait(timeout=seconds + 60)
        shutil.copy(out, RESULTS / "cpu-steps.txt")  # the samples, for a closer look
        counts: dict[str, float] = {}
        for line in out.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if stack and n.isdigit():
                step = step_of(stack.split(";"))
                counts[step] = counts.get(step, 0) + int(n)
    total = sum(counts.values()) or 1
    return result, {k: v / total for k, v in counts.items()}


# The parts of the CPU below the server, each named by the kernel function a perf sample's
# call chain passes through (the first that matches, in this order); a sample in none of
# them ran user space: Python, fnhost's bootstrap, the handler
BELOW_PARTS: list[tuple[str, tuple[str, ...]]] = [
    ("page faults (copy-on-write after the fork)", ("exc_page_fault",)),
    ("fork: copying the page tables", ("__do_sys_clone", "kernel_clone")),
    ("exit: unmapping, reaping", ("do_exit", "do_group_exit", "exit_mmap")),
    ("namespaces and mounts (private /tmp)", ("__x64_sys_unshare", "__x64_sys_mount", "__x64_sys_setns")),
    ("cgroups, session, rlimits", ("cgroup_", "__x64_sys_setsid", "__x64_sys_prlimit64")),
    ("other system calls (messages, pipes, memfds)", ("entry_SYSCALL_64",)),
]
USER_PART = "user space (Python: the zygote's loop, the call's bootstrap)"
PERF_HZ = 4000
ZYGOTE = "zygote or parent"  # the processes that fork (a bare fork's: its parent)


def _perf_record(out: Path, target: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["perf", "record", "-e", "cpu-clock", "-F", str(PERF_HZ), "-g", "-o", str(out), *target],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _perf_parts(data: Path, parents: set[int] | None) -> dict[tuple[bool, str], float]:
    """CPU seconds by (sampled in one of ``parents``?, part), from the first sample of a
    child on (a bare fork's import before its loop is not counted). ``parents`` None: the
    first pid sampled."""
    text = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "pid,period,ip,sym"], capture_output=True, text=True, check=True
    ).stdout
    out: dict[tuple[bool, str], float] = {}
    forked = False
    for sample in text.split("\n\n"):
        lines = [line for line in sample.splitlines() if line.strip()]
        if not lines:
            continue
        head = lines[0].split()
        pid, period = int(head[0]), int(head[1])
        parents = {pid} if parents is None else parents
        forked = forked or pid not in parents
        if not forked:
            continue
        chain = " ".join(lines[1:])
        part = next((name for name, marks in BELOW_PARTS if any(m in chain for m in marks)), USER_PART)
        key = (pid in parents, part)
        out[key] = out.get(key, 0.0) + period / 1e9
    return out


def perf_below(pid: int, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The CPU below the server per call, split by part and by process (the zygotes, the
    calls), beside the same split of a bare fork: ``work()`` while perf samples every process
    under the server (the zygotes; the calls and spares they fork from then on are followed)."""
    if shutil.which("perf") is None:
        raise SystemExit("--below needs perf (Debian: linux-perf)")
    zygotes = set(descendants(pid)) - {pid}
    forks = 300
    with tempfile.TemporaryDirectory() as tmp:
        calls_data, bare_data = Path(tmp) / "calls.data", Path(tmp) / "bare.data"
        perf = _perf_record(calls_data, ["-p", ",".join(str(z) for z in sorted(zygotes))])
        time.sleep(1.0)  # perf attached before the calls start
        result = work()
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=60)
        calls = _perf_parts(calls_data, zygotes)
        perf = _perf_record(bare_data, ["--", base_python(), "-c", BARE_FORK, str(forks), "freeze"])
        perf.wait(timeout=300)
        bare = _perf_parts(bare_data, None)
    def per_call(parts: dict[tuple[bool, str], float], n: int) -> dict[str, float]:
        return {f"{ZYGOTE if z else 'call or child'}: {p}": v / n * 1000 for (z, p), v in parts.items()}

    return {"calls": per_call(calls, result["requests"]), "bare": per_call(bare, forks), "calls_per_s": result["per_s"]}


CALL = "trivial call: session + call + server-side wait"
HEALTH = "GET /health (HTTP stack only)"


def median_case(measured: list[dict[str, Any]]) -> dict[str, Any]:
    """One case over the rounds: the median of each figure, the wrong answers of all."""
    out: dict[str, Any] = {k: statistics.median(m[k] for m in measured) for k in measured[0] if k != "wrong"}
    out["wrong"] = sum(m["wrong"] for m in measured)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive clients")
    parser.add_argument("--seconds", type=float, default=4, help="per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every case and the bare fork")
    parser.add_argument(
        "--isolation", default="auto", help="FNHOST_ISOLATION of the server: auto, bwrap, uid or none"
    )
    parser.add_argument("--steps", action="store_true", help="split the server's CPU per call by step (py-spy)")
    parser.add_argument(
        "--below", action="store_true", help="split the CPU below the server per call by part (perf), beside a bare fork's"
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1

    # no rate limit: on a quiet machine the bench's one principal makes more than the default
    # 1000 requests/s, and 429s would measure the limiter rather than the request
    with live_server(env={"FNHOST_ISOLATION": args.isolation, "FNHOST_RATE_LIMIT_PER_SECOND": "0"}) as live:
        creds = live.create_client("bench")
        api = Api(creds)
        assert live.proc is not None
        fid = api.deploy("trivial", TRIVIAL)
        apis = [Api(creds) for _ in range(args.clients)]
        for a in apis:  # warm: every connection open, the function's zygote forked
            a.call_and_wait(fid, {})
        meter = Meter(live.proc.pid)

        def read_function(a: Api, _n: int) -> bool:
            return bool(a.get(f"/functions/{fid}")["id"] == fid)

        def session(a: Api, _n: int) -> bool:
            return bool(a.nonce())

        call = trivial_call(fid)
        requests: dict[str, Callable[[Api, int], bool]] = {
            HEALTH: health,
            "GET /functions/{id} (token, capability, one read)": read_function,
            "POST /sessions (a call's nonce)": session,
            CALL: call,
        }
        # this machine's speed drifts from minute to minute: every round measures each case
        # and the bare fork again, and each ratio is taken within its round
        rounds = []
        for _ in range(args.rounds):
            measured = {name: drive(apis, meter, args.seconds, request) for name, request in requests.items()}
            fork = bare_forks(300, freeze=True)["cpu_per_fork"] * 1000
            rounds.append({"cases": measured, "bare_fork_ms": fork})
        steps: dict[str, float] = {}
        if args.steps:
            sampled, steps = sample_steps(
                live.proc.pid, args.seconds, lambda: drive(apis, meter, args.seconds, call)
            )
        below: dict[str, Any] = {}
        if args.below:
            below = perf_below(live.proc.pid, lambda: drive(apis, meter, args.seconds, call))

    cases = {name: median_case([r["cases"][name] for r in rounds]) for name in requests}
    fork_ms = statistics.median(r["bare_fork_ms"] for r in rounds)
    print(f"\nCPU per request (FNHOST_ISOLATION={args.isolation}, {args.clients} clients, {args.rounds} rounds "
          f"of {args.seconds:g} s per case, {cores} cores; medians over the rounds)\n")
    print(f"{'case':52} {'req/s':>7} {'server':>8} {'below':>8} {'clients':>8} {'total':>8} {'wrong':>6}")
    print(f"{'':52} {'':>7} {'ms':>8} {'ms':>8} {'ms':>8} {'ms':>8}")
    for name, c in cases.items():
        print(
            f"{name:52} {c['per_s']:7.1f} {c['server_ms']:8.2f} {c['below_ms']:8.2f} "
            f"{c['client_ms']:8.2f} {c['total_ms']:8.2f} {c['wrong']:6d}"
        )
    print(f"{'baseline: bare fork of a warm process (pipe, reap)':52} {'':>7} {'':>8} {fork_ms:8.2f}")

    call_case, health_case = cases[CALL], cases[HEALTH]
    ceilings = [cores * 1000 / r["cases"][CALL]["total_ms"] for r in rounds]
    ceiling = statistics.median(ceilings)
    print(
        f"\nceiling on {cores} cores = {cores} / CPU per call = {ceiling:.1f} calls/s "
        f"(measured {call_case['per_s']:.1f})"
    )
    print_bars(
        f"CPU per trivial call, FNHOST_ISOLATION={args.isolation}, {args.clients} clients",
        [
            Bar("server CPU per trivial call (session + call + wait)", call_case["server_ms"], "ms",
                "server CPU per GET /health", health_case["server_ms"], "ms", 6,
                rounds=tuple(r["cases"][CALL]["server_ms"] / r["cases"][HEALTH]["server_ms"] for r in rounds)),
            Bar("CPU below the server per trivial call", call_case["below_ms"], "ms",
                "CPU per bare fork of a warm process", fork_ms, "ms", 1.3,
                rounds=tuple(r["cases"][CALL]["below_ms"] / r["bare_fork_ms"] for r in rounds)),
            Bar(f"trivial calls/s, {args.clients} clients", call_case["per_s"], "/s",
                f"ceiling {cores} cores / CPU per call", ceiling, "/s", 0.85, at_least=True,
                rounds=tuple(r["cases"][CALL]["per_s"] / c for r, c in zip(rounds, ceilings, strict=True))),
        ],
    )
    if steps:
        print(f"\nserver CPU per trivial call by step (py-spy samples, a run of its own: "
              f"{sampled['server_ms']:.2f} ms per call while sampled)\n")
        print(f"{'step':52} {'share':>7} {'ms':>8}")
        for name, share in sorted(steps.items(), key=lambda kv: -kv[1]):
            print(f"{name:52} {share:7.1%} {share * sampled['server_ms']:8.2f}")
    if below:
        print(f"\nCPU below the server per trivial call by part (perf samples, a run of its own at "
              f"{below['calls_per_s']:.0f} calls/s; sampling slows it, so compare the columns, not the runs)\n")
        print(f"{'process: part':78} {'call ms':>8} {'bare ms':>8}")
        keys = sorted(set(below["calls"]) | set(below["bare"]), key=lambda k: (not k.startswith(ZYGOTE), -below["calls"].get(k, 0)))
        for key in keys:
            print(f"{key:78} {below['calls'].get(key, 0):8.2f} {below['bare'].get(key, 0):8.2f}")
        print(f"{'all':78} {sum(below['calls'].values()):8.2f} {sum(below['bare'].values()):8.2f}")
    path = write_results(
        "cpu",
        {
            "isolation": args.isolation,
            "clients": args.clients,
            "cores": cores,
            "cases": cases,
            "bare_fork_ms": fork_ms,
            "ceiling_calls_per_s": ceiling,
            "rounds": rounds,
            "steps": steps,
            "below": below,
        },
    )
    print(f"\nwrote {path}")
    return 1 if call_case["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
