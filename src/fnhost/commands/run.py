"""``fnhost run PATH``: run a handler on this machine through the service's own bootstrap.

The call goes through ``fnhost/run/bootstrap.py run`` (the mode the executor uses for calls
that cannot be forked), so argument passing, ``function_call_info``, environment variables,
log capture, the JSON response check and the response size limit are the service's. The
``client`` it gets talks to the server of the chosen profile with your own credentials.
"""


import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fnhost.commands import _profiles
from fnhost.commands._calls import print_log_line
from fnhost.commands._common import (
    FAILED,
    USAGE,
    JsonOpt,
    ProfileOpt,
    emit_json,
    err_console,
    fail,
    make_client,
    parse_data,
    parse_pairs,
)
from fnhost.commands._profiles import ProfileError

BOOTSTRAP = Path(__file__).resolve().parents[1] / "run" / "bootstrap.py"


def _memfd(name: str, content: bytes = b"") -> int:
    fd = os.memfd_create(name, 0)  # no CLOEXEC: the bootstrap inherits it through pass_fds
    os.write(fd, content)
    return fd


def _environment(code_dir: Path, runtime: str | None, build: bool, python: str | None) -> tuple[str, list[str]]:
    """(interpreter, site dirs): ours, the one given, or the one the service would build."""
    if not build:
        return python or sys.executable, []
    from fnhost.build import runtimes
    from fnhost.build.envs import EnvironmentCache, requirements_of
    from fnhost.build.zips import CodeError
    from fnhost.settings import Settings

    settings = Settings()
    requirements = requirements_of(code_dir)
    cache = EnvironmentCache(settings, runtimes.discover())
    err_console.print(f"Preparing the {runtime or settings.default_runtime} environment…", highlight=False)
    try:
        env = cache.get_or_build(
            runtime or settings.default_runtime,
            requirements,
            requirements_file=code_dir / "requirements.txt" if requirements else None,
            code_digest=f"local:{code_dir}",
        )
    except CodeError as exc:
        fail(f"{exc.message}\n{exc.trace}", FAILED)
    finally:
        cache.close()
    return env.python, env.site_dirs


def run(
    path: Annotated[Path, typer.Argument(help="The code folder (or a single .py file).")],
    data: Annotated[str | None, typer.Option(help="Input data: JSON, or @file.json (@- for stdin).")] = None,
    function_path: Annotated[str | None, typer.Option(help="File defining handle() (default handler.py).")] = None,
    secret: Annotated[list[str] | None, typer.Option(help="Secret KEY=VALUE (repeatable).")] = None,
    env: Annotated[list[str] | None, typer.Option(help="Environment variable KEY=VALUE (repeatable).")] = None,
    build: Annotated[
        bool,
        typer.Option(help="Run in the environment the service would build (runtime + requirements.txt)."),
    ] = False,
    runtime: Annotated[str | None, typer.Option(help="Runtime for --build, e.g. py311.")] = None,
    python: Annotated[str | None, typer.Option(help="Interpreter to run in (default: this one).")] = None,
    base_url: Annotated[
        str | None, typer.Option(help="Server the handler's client talks to (default: the profile's).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Most seconds the call may take.")] = 540,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a handler locally exactly as the service would, with a client for a chosen server."""
    path = path.resolve()
    if path.is_file():
        code_dir, function_path = path.parent, function_path or path.name
    elif path.is_dir():
        code_dir, function_path = path, function_path or "handler.py"
    else:
        fail(f"{path} does not exist.", USAGE, as_json=as_json)
    project, token, server = "default", "", base_url or "http://127.0.0.1:8000"
    try:
        _, prof = _profiles.load(profile)
    except ProfileError as exc:
        if profile is not None:
            fail(str(exc), USAGE, as_json=as_json)
        if not as_json:
            err_console.print(f"[yellow]No profile[/yellow]: the handler's client will not authenticate ({exc})")
    else:
        project, server = prof.project, base_url or prof.base_url
        token = make_client(prof).config.credentials.authorization_header()[1].removeprefix("Bearer ")
    python_bin, site_dirs = _environment(code_dir, runtime, build, python)
    job = {
        "codeDir": str(code_dir),
        "functionPath": function_path,
        "functionId": 0,
        "callId": 0,
        "project": project,
        "baseUrl": server.rstrip("/"),
        "token": token,
        "data": parse_data(data),
        "secrets": parse_pairs(secret, "--secret") or {},
        "envVars": parse_pairs(env, "--env") or {},
        "limits": {"responseMaxBytes": 1 << 20},
    }
    result = _run_job(job, python_bin, site_dirs, timeout, as_json)
    if as_json:
        emit_json(result)
    elif result["status"] == "Completed":
        err_console.print(f"[green]Completed[/green] in {result['seconds']:.2f}s", highlight=False)
        print(json.dumps(result["response"], indent=2))
    else:
        err_console.print(f"[red]{result['status']}[/red]: {result['error']['message']}", highlight=False)
    if result["status"] != "Completed":
        raise typer.Exit(FAILED)


def _run_job(job: dict[str, Any], python: str, site_dirs: list[str], timeout: float, as_json: bool) -> dict[str, Any]:
    job_fd = _memfd("fnhost-job", json.dumps(job).encode())
    result_fd = _memfd("fnhost-result")
    log_r, log_w = os.pipe()
    os.set_inheritable(log_w, True)
    cmd = [python, "-I", str(BOOTSTRAP), "run", "--job-fd", str(job_fd), "--log-fd", str(log_w),
           "--result-fd", str(result_fd)]
    for d in site_dirs:
        cmd += ["--site-dir", d]
    logs: list[dict[str, Any]] = []
    # as the service's log collector does: secret values never reach the logs or the error
    secrets = sorted({v for v in job["secrets"].values() if v}, key=len, reverse=True)

    def redact(text: str) -> str:
        for value in secrets:
            text = text.replace(value, "***")
        return text

    def pump() -> None:
        with os.fdopen(log_r, "r", errors="replace") as lines:
            for line in lines:
                entry = {"timestamp": int(time.time() * 1000), "message": redact(line.rstrip("\n"))}
                logs.append(entry)
                if not as_json:
                    print_log_line(entry, err_console)  # stdout is for the response alone

    started = time.monotonic()
    proc = subprocess.Popen(cmd, pass_fds=(job_fd, log_w, result_fd), cwd=job["codeDir"])
    os.close(log_w)
    os.close(job_fd)
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    status = None
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        status = "Timeout"
        try:
            os.killpg(proc.pid, 9)  # the bootstrap made its own process group
        except ProcessLookupError:
            proc.kill()
        proc.wait()
    reader.join(5)
    seconds = time.monotonic() - started
    os.lseek(result_fd, 0, os.SEEK_SET)
    raw = b""
    while chunk := os.read(result_fd, 1 << 20):
        raw += chunk
    os.close(result_fd)
    out: dict[str, Any] = {"status": status, "seconds": round(seconds, 3), "logs": logs, "response": None, "error": None}
    if status == "Timeout":
        out["error"] = {"message": f"The call took longer than {timeout:g} s."}
    elif raw.startswith(b"OK\n"):
        out["status"], out["response"] = "Completed", json.loads(raw[3:])
    elif raw.startswith(b"ERR\n"):
        error = json.loads(raw[4:])
        out["status"], out["error"] = "Failed", {k: redact(v) if isinstance(v, str) else v for k, v in error.items()}
    else:
        out["status"] = "Failed"
        out["error"] = {"message": f"The handler's process ended (exit {proc.returncode}) without a result."}
    return out
