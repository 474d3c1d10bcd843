"""Two versions of fnhost on this machine at the same time: what a change does to a call's CPU.

    uv run python bench/ab.py [BASE] [CHANGED] [--rounds 6] [--seconds 4] [--clients 8]

BASE and CHANGED are git revisions; CHANGED defaults to the working tree and BASE to
``HEAD``, so with no arguments this measures the uncommitted change (and, on a clean tree,
the noise: the same code against itself). A revision is checked out in a temporary git
worktree and served from there (``PYTHONPATH`` puts its ``src`` first), each server with a
home of its own; environments are shared through ``bench/results/envs``.

This shared 2-core machine's speed drifts by up to 2x from one minute to the next, so runs
of ``bench/cpu.py`` one after the other cannot tell a change of a few percent from the
drift. Here both servers run side by side and are driven in turns (the same clients as
``bench/cpu.py``: keep-alive clients, trivial calls of ``def handle(data): return data``,
every response checked, and ``GET /health`` as the HTTP stack's baseline), a few seconds
each, round after round, the order alternating; each round's ratio CHANGED / BASE compares
windows seconds apart, and the figure is the median of the rounds' ratios. Writes
``bench/results/ab.json``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, Api, live_server, write_results
from cpu import TRIVIAL, Meter, drive, health, trivial_call

FIGURES = [
    ("server_ms", "server CPU, ms"),
    ("below_ms", "CPU below the server, ms"),
    ("client_ms", "client CPU, ms"),
    ("per_s", "requests/s"),
]


@contextmanager
def source_of(revision: str | None) -> Iterator[Path]:
    """The ``src`` directory of a revision (None: the working tree's)."""
    if revision is None:
        yield REPO / "src"
        return
    with tempfile.TemporaryDirectory(prefix="fnhost-ab-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(tree), revision], check=True)
        try:
            yield tree / "src"
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", nargs="?", default="HEAD", help="git revision (default HEAD)")
    parser.add_argument("changed", nargs="?", default=None, help="git revision (default: the working tree)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4, help="per case, side and round")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--isolation", default="auto")
    args = parser.parse_args()
    names = {"A": args.base, "B": args.changed or "the working tree"}

    with ExitStack() as stack:
        sides: dict[str, tuple[Meter, list[Api], int]] = {}
        for side, revision in (("A", args.base), ("B", args.changed)):
            src = stack.enter_context(source_of(revision))
            env = {"FNHOST_ISOLATION": args.isolation, "FNHOST_RATE_LIMIT_PER_SECOND": "0", "PYTHONPATH": str(src)}
            live = stack.enter_context(live_server(env=env))
            assert live.proc is not None
            creds = live.create_client("bench")
            fid = Api(creds).deploy("trivial", TRIVIAL)
            apis = [Api(creds) for _ in range(args.clients)]
            for a in apis:  # warm: every connection open, the function's zygote forked
                a.call_and_wait(fid, {})
            sides[side] = (Meter(live.proc.pid), apis, fid)

        measured: dict[str, dict[str, list[dict[str, Any]]]] = {s: {"health": [], "call": []} for s in sides}
        for r in range(args.rounds):
            order = ("A", "B") if r % 2 == 0 else ("B", "A")
            for name in ("health", "call"):
                for side in order:
                    meter, apis, fid = sides[side]
                    request = health if name == "health" else trivial_call(fid)
                    measured[side][name].append(drive(apis, meter, args.seconds, request))

    wrong = sum(m["wrong"] for s in measured.values() for ms in s.values() for m in ms)
    print(f"\nA = {names['A']}, B = {names['B']} (FNHOST_ISOLATION={args.isolation}, {args.clients} clients, "
          f"{args.rounds} rounds of {args.seconds:g} s per case and side)\n")
    print(f"{'case':38} {'figure':26} {'A median':>9} {'B median':>9} {'B/A':>6}  rounds' B/A")
    out: dict[str, Any] = {"base": names["A"], "changed": names["B"], "rounds": measured, "ratios": {}}
    for name, label in (("health", "GET /health"), ("call", "trivial call (session + call + wait)")):
        for key, figure in FIGURES:
            if name == "health" and key == "below_ms":
                continue
            base = [m[key] for m in measured["A"][name]]
            changed = [m[key] for m in measured["B"][name]]
            ratios = [y / x for x, y in zip(base, changed, strict=True) if x]
            ratio = statistics.median(ratios) if ratios else float("nan")
            out["ratios"][f"{name} {key}"] = ratio
            each = " ".join(f"{q:.2f}" for q in ratios)
            print(f"{label:38} {figure:26} {statistics.median(base):9.2f} {statistics.median(changed):9.2f} "
                  f"{ratio:6.3f}  {each}")
    for side in ("A", "B"):
        per_round = [c["server_ms"] / h["server_ms"] for h, c in zip(measured[side]["health"], measured[side]["call"], strict=True)]
        print(f"{side}: server CPU per call / per GET /health, median of the rounds {statistics.median(per_round):.2f}x "
              f"({' '.join(f'{x:.2f}' for x in per_round)})")
    print(f"\nwrote {write_results('ab', out)}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
