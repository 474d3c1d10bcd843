"""Python environments for functions, built with ``uv`` and cached by content hash.

Two layers, both shared by every function that needs the same thing::

    {env_dir}/base-<runtime>-<hash>/       a venv per runtime with the baseline
                                           (``Settings.baseline_requirements``, incl.
                                           cognite-sdk); built once
    {env_dir}/req-<hash>/site/             only a function's own requirements.txt,
                                           installed with ``uv pip install --target``

A function without requirements runs on the baseline directly. With requirements, its
interpreter is the baseline's and ``site_dirs`` (the ``req`` dir) go first on ``sys.path``,
so a user's pin (say another cognite-sdk) shadows the baseline's copy. The ``req`` hash
covers the runtime, the baseline, the normalised requirements and the index settings:
functions with identical inputs share one directory.

Builds happen in a temp dir renamed into place, under an ``flock`` per hash, so several
servers (or test runs) may share ``env_dir``. uv's own package cache is reused by all builds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fnhost.build.runtimes import Runtime
from fnhost.build.zips import CodeError
from fnhost.settings import Settings

log = logging.getLogger("fnhost.build")

TRACE_MAX_CHARS = 20_000


@dataclass(frozen=True)
class Environment:
    """Where a function runs: ``python`` with ``site_dirs`` put first on ``sys.path``.

    The interpreter adds its own (baseline) site-packages after ``site_dirs``.
    """

    hash: str
    python: str
    site_dirs: list[str] = field(default_factory=list)

    def pythonpath(self, *first: str) -> str:
        return os.pathsep.join([*first, *self.site_dirs])


def normalise_requirements(text: str) -> str:
    """Requirement lines without blanks, comments and trailing spaces; order kept."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].split("\t#", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return "\n".join(lines)


def _refers_to_local_files(requirements: str) -> bool:
    for line in requirements.splitlines():
        if line.startswith(
            ("-r", "-c", "-e", "--requirement", "--constraint", "--editable", ".", "/", "file:")
        ):
            return True
    return False


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _tail(text: str) -> str:
    return text if len(text) <= TRACE_MAX_CHARS else "…(truncated)…\n" + text[-TRACE_MAX_CHARS:]


def _uv_summary(output: str) -> str:
    """The line of uv's output that says what went wrong."""
    cross = "\u00d7"  # uv marks its error lines with a multiplication sign
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith((cross, "error:")):
            detail = " ".join(x.lstrip("╰─▶ ").strip() for x in lines[i + 1 : i + 3])
            head = ln.lstrip(cross + " ").strip()
            return f"{head} {detail}".strip()
    return lines[-1] if lines else "no output"


class EnvironmentCache:
    def __init__(self, settings: Settings, runtimes: dict[str, Runtime]) -> None:
        from uv import find_uv_bin

        self.settings = settings
        self.runtimes = runtimes
        self.root = settings.resolved_env_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self.uv = find_uv_bin()
        self._children: set[subprocess.Popen[str]] = set()
        self._children_lock = threading.Lock()
        self._closed = False
        # called with True (reused) or False (built) on each lookup: the metrics hook
        self.on_lookup: list[Callable[[bool], None]] = []

    # -- public ----------------------------------------------------------------------------
    def baseline(self, runtime: str) -> Environment:
        """The runtime's baseline venv, built on first use."""
        rt = self._runtime(runtime)
        h = _digest(
            "base", rt.name, rt.version, rt.executable, self.settings.baseline_requirements
        )[:16]
        final = self.root / f"base-{rt.name}-{h}"
        env = Environment(hash=f"base-{h}", python=str(final / "bin" / "python"))
        if (final / "bin" / "python").exists():
            return env
        with self._locked(f"base-{rt.name}-{h}"):
            if (final / "bin" / "python").exists():
                return env
            started = time.monotonic()
            tmp = self._tmp(final)
            try:
                self._uv(
                    ["venv", "--relocatable", "--python", rt.executable, "--no-project", str(tmp)],
                    what=f"Creating the {rt.name} environment",
                )
                if self.settings.baseline_requirements:
                    self._uv(
                        [
                            "pip",
                            "install",
                            "--python",
                            str(tmp / "bin" / "python"),
                            *self.settings.baseline_requirements,
                        ],
                        what=f"Installing the {rt.name} baseline ({', '.join(self.settings.baseline_requirements)})",
                    )
                tmp.rename(final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            log.info("built baseline %s in %.1fs", final.name, time.monotonic() - started)
        return env

    def key(
        self,
        runtime: str,
        requirements: str,
        index_url: str | None,
        extra_index_urls: list[str] | None,
        code_digest: str = "",
    ) -> str | None:
        """The content hash of a requirements layer; None when there is nothing to install."""
        reqs = normalise_requirements(requirements)
        if not reqs:
            return None
        rt = self._runtime(runtime)
        local = code_digest if _refers_to_local_files(reqs) else ""
        return _digest(
            "req",
            rt.name,
            rt.version,
            self.settings.baseline_requirements,
            reqs,
            index_url or "",
            list(extra_index_urls or []),
            local,
        )[:32]

    def get_or_build(
        self,
        runtime: str,
        requirements: str,
        *,
        index_url: str | None = None,
        extra_index_urls: list[str] | None = None,
        requirements_file: Path | None = None,
        code_digest: str = "",
    ) -> Environment:
        """The environment for these inputs: a cache hit, or a build. Raises ``CodeError``."""
        base = self.baseline(runtime)
        h = self.key(runtime, requirements, index_url, extra_index_urls, code_digest)
        final = self.root / f"req-{h}"
        hit = h is None or final.is_dir()
        for hook in self.on_lookup:
            hook(hit)
        if h is None:
            return base
        env = Environment(hash=h, python=base.python, site_dirs=[str(final / "site")])
        if final.is_dir():
            return env
        with self._locked(f"req-{h}"):
            if final.is_dir():
                return env
            tmp = self._tmp(final)
            try:
                tmp.mkdir()
                req_path = tmp / "requirements.txt"
                req_path.write_text(normalise_requirements(requirements) + "\n")
                args = [
                    "pip",
                    "install",
                    "--python",
                    base.python,
                    "--target",
                    str(tmp / "site"),
                    "--index-strategy",
                    "first-index",
                    "-r",
                    str(requirements_file or req_path),
                ]
                if index_url:
                    args += ["--index-url", index_url]
                for extra in extra_index_urls or []:
                    args += ["--extra-index-url", extra]
                started = time.monotonic()
                cwd = requirements_file.parent if requirements_file else tmp
                self._uv(args, what="Installing requirements.txt", cwd=cwd)
                tmp.rename(final)
                log.info(
                    "built requirements env %s in %.1fs", final.name, time.monotonic() - started
                )
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return env

    @contextlib.contextmanager
    def supervised(self, proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
        """Keep ``proc`` (started with ``start_new_session``) on the list ``close`` kills."""
        with self._children_lock:
            self._children.add(proc)
        try:
            yield proc
        finally:
            with self._children_lock:
                self._children.discard(proc)

    def close(self) -> None:
        """Stop every installer still running (the server is stopping)."""
        self._closed = True
        with self._children_lock:
            children = list(self._children)
        for proc in children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    # -- helpers ---------------------------------------------------------------------------
    def _runtime(self, name: str) -> Runtime:
        rt = self.runtimes.get(name)
        if rt is None:
            raise CodeError(
                f"Runtime {name!r} is not installed on this server. Available runtimes: "
                f"{', '.join(sorted(self.runtimes)) or 'none'}."
            )
        return rt

    def _tmp(self, final: Path) -> Path:
        return final.parent / f".tmp-{final.name}-{os.getpid()}-{os.urandom(3).hex()}"

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[None]:
        fd = os.open(self.root / f".lock-{name}", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # whoever held the lock before us is done: its leftovers (a crash) are stale
            for stale in self.root.glob(f".tmp-{name}-*"):
                shutil.rmtree(stale, ignore_errors=True)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _uv_env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FNHOST_", "VIRTUAL_ENV", "PYTHON"))
        }
        env["UV_PYTHON_DOWNLOADS"] = "never"
        env["UV_NO_PROGRESS"] = "1"
        env.pop("UV_SYSTEM_PYTHON", None)
        if self.settings.uv_cache_dir is not None:
            env["UV_CACHE_DIR"] = str(self.settings.uv_cache_dir)
        return env

    def _uv(self, args: list[str], *, what: str, cwd: Path | None = None) -> str:
        if self._closed:
            raise CodeError(f"{what} was stopped: the server is shutting down.")
        timeout = self.settings.build_timeout_seconds
        proc = subprocess.Popen(
            [self.uv, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=self._uv_env(),
            cwd=cwd,
            start_new_session=True,
        )
        with self.supervised(proc):
            try:
                output, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                output, _ = proc.communicate()
                raise CodeError(
                    f"{what} took longer than {timeout} s (the build timeout) and was stopped.",
                    _tail(output or ""),
                ) from None
        if proc.returncode != 0:
            if self._closed:
                raise CodeError(f"{what} was stopped: the server is shutting down.", _tail(output))
            raise CodeError(f"{what} failed: {_uv_summary(output)}", _tail(output))
        return output
