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

Where each step runs (docs/isolation.md has the threat model):

- The baseline (the operator's ``baseline_requirements``) is installed by uv on the host.
- A function's requirements are first installed by uv on the host with ``--no-build``:
  wheels only, so no code of the function's or of any package runs, and nothing but uv
  writes to uv's shared cache. uv reaches the indexes through an egress proxy with the
  build's network policy (its named indexes, plus public addresses under ``internet``).
  Such a layer is shared by every function with the same inputs.
- When that needs a build (a source distribution, a local package, a PEP 517 backend), or
  the requirements name local files or index options, the whole install runs again inside a
  sandbox (``run/sandbox.py``): the function's uid, no capabilities, ``no_new_privs``, a
  network namespace that reaches only the egress proxy, a copy of the function's code, and a
  uv cache of its own, thrown away afterwards. None of the server's files, the shared cache or
  other environments are in it. Its result belongs to that function alone (the hash covers the
  function), and is owned by root and read-only before any call runs on it.

Builds happen in a temp dir renamed into place, under an ``flock`` per hash, so several
servers (or test runs) may share ``env_dir``.
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
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fnhost.build.runtimes import Runtime
from fnhost.build.zips import CodeError
from fnhost.run.network import Egress, Listener, NetworkPolicy
from fnhost.run.sandbox import Isolation, Sockets, interpreter_dirs
from fnhost.settings import Settings

log = logging.getLogger("fnhost.build")

TRACE_MAX_CHARS = 20_000
BUILD_DIR = "/build"  # where a sandboxed build sees its work directory
SANDBOX_UV = "/fnhost/uv"
# what a sandboxed build inherits from the server's environment: nothing secret
_BUILD_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "SSL_CERT_FILE", "SSL_CERT_DIR")


def requirements_of(code_dir: Path) -> str:
    path = code_dir / "requirements.txt"
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise CodeError(f"requirements.txt cannot be read: {exc}") from None


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


def _needs_sandbox(requirements: str) -> bool:
    """Whether the requirements name local files or carry options (``--find-links /etc``,
    an index of their own): those are read only in a sandbox, where only the code is."""
    return any(line.startswith(("-", ".", "/", "~", "file:")) or "@ file:" in line
               for line in requirements.splitlines())


def _index_urls_in(requirements: str) -> list[str]:
    """Index URLs named in requirements.txt (``--index-url X``, ``-i X``, ``--extra-index-url X``)."""
    urls = []
    for line in requirements.splitlines():
        parts = line.replace("=", " ", 1).split() if line.startswith("--") else line.split()
        options = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links")
        if len(parts) >= 2 and parts[0] in options and parts[1].startswith(("http://", "https://")):
            urls.append(parts[1])
    return urls


def _configured_indexes() -> list[str]:
    """The indexes uv uses when a function names none, as configured in this server's environment."""
    urls = []
    for key in ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_INDEX"):
        for value in os.environ.get(key, "").split():
            url = value.split("=", 1)[1] if "=" in value and not value.startswith("http") else value
            if url.startswith(("http://", "https://")):
                urls.append(url)
    return urls


def _source_builds_refused(output: str) -> bool:
    """uv's words for "this needs a build, and --no-build forbids it"."""
    text = output.lower()
    return "source distributions is disabled" in text or "building from source is disabled" in text


def _install_failed(output: str, listener: Listener | None) -> CodeError:
    """What went wrong, in uv's words, and in the egress proxy's when it refused or could not
    connect (uv shows only the proxy's status line)."""
    message = f"Installing requirements.txt failed: {_uv_summary(output)}"
    if listener is not None and listener.notes:
        message += f" ({listener.notes[-1]})"
        output = f"{output.rstrip()}\n{listener.notes[-1]}\n"
    return CodeError(message, _tail(output))


def _chown_tree(root: Path, uid: int) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, uid, uid)
        for name in [*dirnames, *filenames]:
            os.chown(os.path.join(dirpath, name), uid, uid, follow_symlinks=False)


def _seal(root: Path) -> None:
    """Make what a build wrote root's and read-only (readable by all: calls run as the
    function's uid). Links are not followed: a planted symlink changes nothing outside."""
    as_root = os.geteuid() == 0
    for dirpath, dirnames, filenames in os.walk(root):
        if as_root:
            os.chown(dirpath, 0, 0)
        os.chmod(dirpath, 0o555)  # noqa: S103  (read-only for all: calls read their packages)
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if as_root:
                os.chown(path, 0, 0, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, 0o555 if st.st_mode & 0o111 else 0o444)
            elif stat.S_ISDIR(st.st_mode):
                continue  # walked next
            elif not stat.S_ISLNK(st.st_mode):
                os.unlink(path)  # fifos, sockets, devices: nothing a package needs


@dataclass
class BuildSandbox:
    """How function-supplied build steps are isolated: the host's isolation (detected on
    first use), the egress proxies, and where build sockets live."""

    isolation: Callable[[], Isolation]
    egress: Egress
    policy: NetworkPolicy


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _tail(text: str) -> str:
    return text if len(text) <= TRACE_MAX_CHARS else "…(truncated)…\n" + text[-TRACE_MAX_CHARS:]


def _uv_summary(output: str) -> str:
    """The line of uv's output that says what went wrong, with the first two lines of its
    cause chain and the last (the root cause, such as "No space left on device", which a
    longer chain would otherwise push out)."""
    cross = "\u00d7"  # uv marks its error lines with a multiplication sign
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith((cross, "error:")):
            chain = [x.lstrip("├╰─▶ ").strip() for x in lines[i + 1 :]]
            chain = chain[: next((n for n, x in enumerate(chain) if x.startswith("hint:")), None)]
            kept = chain if len(chain) <= 3 else [*chain[:2], "…", chain[-1]]
            head = ln.lstrip(cross + " ").strip()
            return " ".join([head, *kept]).strip()
    return lines[-1] if lines else "no output"


class EnvironmentCache:
    def __init__(
        self, settings: Settings, runtimes: dict[str, Runtime], sandbox: BuildSandbox | None = None
    ) -> None:
        """``sandbox``: where a function's build steps run; without one (``fnhost run --build``
        on a developer's own machine) they run as the current user."""
        from uv import find_uv_bin

        self.settings = settings
        self.runtimes = runtimes
        self.sandbox = sandbox
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
        function_id: int | None = None,
    ) -> Environment:
        """The environment for these inputs: a cache hit, or a build. Raises ``CodeError``.

        ``requirements_file`` is the function's own (its folder holds any local packages it
        names); ``function_id`` owns a layer that had to be built in its sandbox.
        """
        base = self.baseline(runtime)
        h = self.key(runtime, requirements, index_url, extra_index_urls, code_digest)
        if h is None:
            for hook in self.on_lookup:
                hook(True)
            return base
        reqs = normalise_requirements(requirements)
        indexes = [u for u in [index_url, *(extra_index_urls or [])] if u]
        # a layer some build step of a function's made is that function's alone
        private = f"{h[:24]}-f{function_id}" if function_id is not None else f"{h[:24]}-local"
        shared_dir, private_dir = self.root / f"req-{h}", self.root / f"req-{private}"
        for done in (shared_dir, private_dir):
            if done.is_dir():
                for hook in self.on_lookup:
                    hook(True)
                return Environment(hash=done.name[4:], python=base.python, site_dirs=[str(done / "site")])
        for hook in self.on_lookup:
            hook(False)
        if not _needs_sandbox(reqs):
            with self._locked(f"req-{h}"):
                if not shared_dir.is_dir():
                    self._install_wheels(base, reqs, indexes, shared_dir)
            if shared_dir.is_dir():
                return Environment(hash=h, python=base.python, site_dirs=[str(shared_dir / "site")])
        with self._locked(f"req-{private}"):
            if not private_dir.is_dir():
                code = requirements_file.parent if requirements_file is not None else None
                self._install_in_sandbox(base, reqs, indexes, private_dir, code, function_id)
        return Environment(hash=private, python=base.python, site_dirs=[str(private_dir / "site")])

    def _install_args(self, python: str, target: str, requirements: str, indexes: list[str]) -> list[str]:
        args = [
            "pip", "install", "--python", python, "--target", target,
            "--index-strategy", "first-index", "-r", requirements,
        ]
        if indexes:
            args += ["--index-url", indexes[0]]
        for extra in indexes[1:]:
            args += ["--extra-index-url", extra]
        return args

    def _build_policy(self, requirements: str, indexes: list[str]) -> NetworkPolicy:
        named = [*indexes, *_index_urls_in(requirements)] or _configured_indexes()
        policy = self.sandbox.policy if self.sandbox is not None else NetworkPolicy()
        return policy.for_build(named)

    def _install_wheels(self, base: Environment, requirements: str, indexes: list[str], final: Path) -> bool:
        """uv on the host, wheels only: nothing of the function's runs. True if it installed,
        False if it needs a build (then the sandbox does it all); raises ``CodeError`` else."""
        tmp = self._tmp(final)
        try:
            tmp.mkdir()
            (tmp / "requirements.txt").write_text(requirements + "\n")
            args = self._install_args(base.python, str(tmp / "site"), str(tmp / "requirements.txt"), indexes)
            proxy = None
            if self.sandbox is not None:  # uv's requests go where the build's policy allows
                proxy = self.sandbox.egress.proxy_tcp(self._build_policy(requirements, indexes), "build (wheels)")
            started = time.monotonic()
            try:
                env = self._uv_env()
                if proxy is not None:
                    env.update({k: proxy.url for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")})
                code, output = self._run([self.uv, *args, "--no-build"], env=env, cwd=tmp, what="Installing requirements.txt")
            finally:
                if proxy is not None:
                    proxy.close()
            if code != 0:
                if _source_builds_refused(output):
                    return False
                raise _install_failed(output, proxy)
            tmp.rename(final)
            log.info("built requirements env %s (wheels) in %.1fs", final.name, time.monotonic() - started)
            return True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _install_in_sandbox(
        self,
        base: Environment,
        requirements: str,
        indexes: list[str],
        final: Path,
        code_dir: Path | None,
        function_id: int | None,
    ) -> None:
        """The full install, source builds and all, as the function's uid in its sandbox."""
        iso = self.sandbox.isolation() if self.sandbox is not None else Isolation()
        uid = iso.uid_of(function_id or 0)
        work = self._tmp(final)
        sealed = iso.mechanism == "bwrap"
        inside = BUILD_DIR if sealed else str(work)
        started = time.monotonic()
        listener = None
        socket_dir = None
        try:
            src = work / "src"
            if code_dir is not None and code_dir.is_dir():
                shutil.copytree(code_dir, src, symlinks=True)  # extraction let no symlink in
            else:
                src.mkdir(parents=True)
            (src / ".fnhost-requirements.txt").write_text(requirements + "\n")
            for sub in ("site", "cache", "home"):
                (work / sub).mkdir()
            if iso.drops_uid:
                _chown_tree(work, uid)
            uv = SANDBOX_UV if sealed else self.uv
            args = self._install_args(
                base.python, f"{inside}/site", f"{inside}/src/.fnhost-requirements.txt", indexes
            )
            env = {k: v for k, v in os.environ.items() if k in _BUILD_ENV}
            env.update(
                HOME=f"{inside}/home",
                UV_CACHE_DIR=f"{inside}/cache",  # its own: nothing it writes is read by another
                UV_PYTHON_DOWNLOADS="never",
                UV_NO_PROGRESS="1",
                UV_LINK_MODE="copy",
            )
            sockets = Sockets()
            if iso.network and self.sandbox is not None:
                policy = self._build_policy(requirements, indexes)
                socket_dir = tempfile.mkdtemp(prefix="fnhost-build-")
                path = os.path.join(socket_dir, "egress.sock")
                listener = self.sandbox.egress.proxy(path, policy, name=f"build of function {function_id}")
                sockets = Sockets(egress=path)
                env = iso.environ(env, policy)
                env["HOME"] = f"{inside}/home"
                # no API in a build: every request, loopback indexes too, goes to the proxy
                env.pop("NO_PROXY", None)
                env.pop("no_proxy", None)
            argv = iso.build_command(
                base.python,
                [uv, *args],
                uid=uid,
                work_dir=str(work),
                read_only=interpreter_dirs(base.python, ()) if sealed else (),
                sockets=sockets,
                extra_ro={self.uv: SANDBOX_UV},
                chdir=f"{inside}/src",
            )
            code, output = self._run(argv, env=env, cwd=src, what="Installing requirements.txt")
            if code != 0:
                raise _install_failed(output, listener)
            site = work / "site"
            _seal(site)  # root's and read-only before any call can load it
            final.mkdir()
            site.rename(final / "site")
            log.info(
                "built requirements env %s in the function's sandbox in %.1fs",
                final.name,
                time.monotonic() - started,
            )
        finally:
            if listener is not None:
                listener.close()
            if socket_dir is not None:
                shutil.rmtree(socket_dir, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)

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
        code, output = self._run([self.uv, *args], env=self._uv_env(), cwd=cwd, what=what)
        if code != 0:
            raise CodeError(f"{what} failed: {_uv_summary(output)}", _tail(output))
        return output

    def _run(self, argv: list[str], *, env: dict[str, str], cwd: Path | None, what: str) -> tuple[int, str]:
        """Run one build step under the build timeout; (exit code, its output)."""
        if self._closed:
            raise CodeError(f"{what} was stopped: the server is shutting down.")
        timeout = self.settings.build_timeout_seconds
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
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
        if proc.returncode != 0 and self._closed:
            raise CodeError(f"{what} was stopped: the server is shutting down.", _tail(output))
        return proc.returncode, output
