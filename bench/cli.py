"""CLI start-up: wall time of ``fnhost --help`` and ``fnhost functions ls`` against a real server.

    uv run python bench/cli.py [--runs 15]

Starts ``fnhost serve`` on a free port, creates a client, saves a profile for it with
``fnhost login --from-file`` (in a temporary ``FNHOST_CLI_CONFIG``) and creates a few
functions, then runs the installed ``fnhost`` command, as a person types it, ``--runs``
times per case: ``fnhost --help``, ``fnhost functions ls`` (a token from the server's token
endpoint, then the list, then a table) and ``fnhost functions ls --json``. Each run is a new
process; the figure is the median wall time from start to exit.

The commands run with Python's bytecode cache allowed (``PYTHONDONTWRITEBYTECODE`` is taken
out of their environment), as on any installed system: the untimed first run of each writes
the ``.pyc`` files (``uv sync`` installs packages without them), so what is timed is every run
a person makes after their first.

Baselines in the same run: ``python -c pass`` (the interpreter alone) and
``python -c "import typer"`` (the floor of any Typer command). The bar: each of
``fnhost --help`` and ``fnhost functions ls`` at most 0.4 s median. Writes
``bench/results/cli.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Api, live_server, print_table, summary, write_results, zip_of

BAR_SECONDS = 0.4
ECHO = zip_of({"handler.py": "def handle(data):\n    return data\n"})


def fnhost_command() -> str:
    """The ``fnhost`` script of this environment: what ``pip install fnhost`` puts on PATH."""
    script = Path(sys.executable).parent / "fnhost"
    if not script.exists():
        raise SystemExit(f"{script} is missing: run ./scripts/setup (uv sync installs it)")
    return str(script)


def time_runs(cmd: list[str], runs: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    fnhost = fnhost_command()

    with live_server() as live, tempfile.TemporaryDirectory(prefix="fnhost-bench-cli-") as tmp:
        creds = live.create_client("bench-cli")
        creds_file = Path(tmp) / "client.json"
        creds_file.write_text(json.dumps(creds))
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("FNHOST_") and k != "PYTHONDONTWRITEBYTECODE"
        }  # fmt: skip
        env.update({"FNHOST_CLI_CONFIG": str(Path(tmp) / "profiles.json"), "COLUMNS": "160"})
        subprocess.run([fnhost, "login", "--from-file", str(creds_file)], env=env, check=True, capture_output=True)
        api = Api(creds)
        for i in range(5):  # rows for the table (their builds need not have ended)
            upload = api.post("/files", {"name": f"listed-{i}.zip"})
            api.http.put(live.base_url + upload["uploadUrl"] if "://" not in upload["uploadUrl"]
                         else upload["uploadUrl"], content=ECHO).raise_for_status()
            api.post("/functions", {"items": [{"name": f"listed-{i}", "externalId": f"listed-{i}",
                                               "fileId": upload["id"]}]})
        listed = subprocess.run([fnhost, "functions", "ls", "--json"], env=env, check=True,
                                capture_output=True, text=True)
        assert len(json.loads(listed.stdout)) == 5, listed.stdout

        # one untimed run of each first: it writes the bytecode cache, and the files the
        # commands read are then in the page cache
        for cmd in ([fnhost, "--help"], [fnhost, "functions", "ls"]):
            time_runs(cmd, 1, env)
        results = {
            "fnhost --help": time_runs([fnhost, "--help"], args.runs, env),
            "fnhost functions ls": time_runs([fnhost, "functions", "ls"], args.runs, env),
            "fnhost functions ls --json": time_runs([fnhost, "functions", "ls", "--json"], args.runs, env),
            "baseline: python -c pass": time_runs([sys.executable, "-c", "pass"], args.runs, env),
            "baseline: python -c 'import typer'": time_runs(
                [sys.executable, "-c", "import typer"], args.runs, env
            ),
        }

    rows = []
    verdicts = {}
    for name, values in results.items():
        note = ""
        if not name.startswith("baseline") and not name.endswith("--json"):
            ok = statistics.median(values) <= BAR_SECONDS
            verdicts[name] = ok
            note = f"bar {BAR_SECONDS * 1000:.0f} ms: {'ok' if ok else 'OVER'}"
        rows.append((name, summary(values), note))
    print_table(f"CLI start-up, wall time of a new process ({args.runs} runs each)", rows)
    path = write_results("cli", {name: summary(values) for name, values in results.items()})
    print(f"\nbar: fnhost --help and fnhost functions ls each <= {BAR_SECONDS * 1000:.0f} ms median "
          f"({'met' if all(verdicts.values()) else 'NOT met'}); wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
