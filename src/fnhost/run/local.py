"""The local executor: each call is a fork of a warm zygote on this machine.

It runs its own event loop in one thread ("fnhost-executor"), so it serves the web app,
the builder's threads and the tests alike. Limits per call: wall-clock timeout (kill →
``Timeout``), memory, processes and CPU through cgroup v1 controllers when this server can
create them (exact out-of-memory detection), rlimits otherwise; file size, open files and
CPU time through rlimits always. Isolation from the server and from other functions is
``run/sandbox.py``'s: with it, each function has zygotes of its own, in its sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fnhost.clock import now_ms
from fnhost.run import protocol
from fnhost.run._loop import start_loop_thread
from fnhost.run.abc import (
    CallJob,
    CallLimits,
    CallOutcome,
    EnvironmentLike,
    Executor,
    PrepareResult,
)
from fnhost.run.network import (
    DEFAULT_API_PORT,
    SANDBOX_API_SOCKET,
    SANDBOX_EGRESS_SOCKET,
    Egress,
    Listener,
    NetworkPolicy,
)
from fnhost.run.sandbox import (
    SANDBOX_CODE_DIR,
    SANDBOX_CODE_ROOT,
    SANDBOX_SOCKET_DIR,
    Isolation,
    IsolationUnavailable,
    Sockets,
    detect,
    interpreter_dirs,
)
from fnhost.run.zygote import (
    EnvZygote,
    FunctionZygote,
    LogCollector,
    Running,
    Spare,
    ZygoteDied,
    clean_environ,
    decode_status,
    default_command,
    interpreter_of,
    kill_call,
    signal_name,
    site_args,
)

log = logging.getLogger("fnhost.run")

ZYGOTE_START_TIMEOUT_S = 120.0
LOG_DRAIN_TIMEOUT_S = 1.0
RESTARTS_PER_MINUTE = 3
SPARE_DURING_CALL_S = 0.05  # a call still running this long gets its successor's spare made
SPARE_UP_TIMEOUT_S = 2.0  # how long prepare waits for the first call's process to be ready


class Cgroups:
    """Per-call cgroup v1 directories (memory, pids, cpu) under this server's own cgroups."""

    CONTROLLERS = ("memory", "pids", "cpu")
    POOL = 64  # empty sets kept for the next calls (a cgroup costs the kernel ~10 KiB)
    POOL_RESIDUE_BYTES = 1 << 20  # page cache a set may still be charged for and be reused

    _instances = itertools.count(1)

    def __init__(self, root: Path = Path("/sys/fs/cgroup")) -> None:
        self.instance = next(self._instances)
        self.bases: dict[str, Path] = {}
        self.leftovers: list[str] = []
        self._memsw = True  # memory.memsw.* exists (swap accounting on) until a write says not
        self._names = itertools.count(1)
        self._limits: dict[str, tuple[int, int, int]] = {}  # a set's first path: its limits
        self._files: dict[str, _SetFiles] = {}  # a set's first path: the files it keeps open
        self._free: dict[tuple[int, int, int], list[list[str]]] = {}  # empty sets, by limits
        own: dict[str, str] = {}
        try:
            for line in Path("/proc/self/cgroup").read_text().splitlines():
                _, ctrls, path = line.split(":", 2)
                for ctrl in ctrls.split(","):
                    own[ctrl] = path
        except (OSError, ValueError):
            return
        for ctrl in self.CONTROLLERS:
            mount = root / ctrl
            if ctrl not in own or not (mount / "cgroup.procs").exists():
                continue
            # one directory per executor: two in one process (tests, benchmarks) never share
            parent = mount / own[ctrl].lstrip("/")
            _sweep(parent)
            base = parent / f"fnhost-{os.getpid()}-{self.instance}"
            try:
                base.mkdir(exist_ok=True)
                probe = base / "probe"
                probe.mkdir()
                probe.rmdir()
            except OSError:
                continue
            self.bases[ctrl] = base

    @property
    def memory(self) -> bool:
        return "memory" in self.bases

    def describe(self) -> str:
        if not self.bases:
            return "rlimits only (no writable cgroup v1 controllers)"
        return "cgroup v1 " + "+".join(sorted(self.bases)) + " per call, plus rlimits"

    def take(self, limits: CallLimits) -> list[str]:
        """A call's cgroups, one directory per controller, with ``limits`` written: an empty
        set a call with the same limits left (``release``), or a new one.

        Reused because making a memory cgroup is the dearest syscall of a call: ~0.1 ms of
        the server's CPU, ~0.15 ms for the three with their removal (timed by hand, empty
        cgroups). A set is reused only empty, with no OOM kill in its history and (nearly)
        nothing charged to it, so what a call is limited and measured by starts as new: the
        same limits, a peak memory that starts again from ~0, no process of the call before.
        (Cumulative counters such as ``memory.failcnt`` carry on; nothing reads them, and a
        sandboxed call has no /sys to read them from.)"""
        key = _limits_key(limits)
        free = self._free.get(key)
        if free:
            return free.pop()
        return self._make(limits, key)

    def _make(self, limits: CallLimits, key: tuple[int, int, int]) -> list[str]:
        """A new set, named ``c-<n>``. With ``os`` calls rather than ``pathlib``: this runs
        on the server's event loop, and pathlib's objects cost more than the syscalls."""
        name = f"c-{next(self._names)}"
        made: list[str] = []
        try:
            for ctrl, base in self.bases.items():
                d = f"{base}/{name}"
                with contextlib.suppress(FileExistsError):
                    os.mkdir(d)
                made.append(d)
                if ctrl == "memory":
                    memory = str(limits.memory_bytes).encode()
                    _write(f"{d}/memory.limit_in_bytes", memory)
                    if self._memsw:  # no swap beyond the limit (where the kernel accounts swap)
                        try:
                            _write(f"{d}/memory.memsw.limit_in_bytes", memory)
                        except FileNotFoundError:
                            self._memsw = False
                        except OSError:
                            pass
                elif ctrl == "pids":
                    _write(f"{d}/pids.max", str(limits.max_processes).encode())
                elif ctrl == "cpu":  # a new cgroup's period is the default 100 ms
                    _write(f"{d}/cpu.cfs_quota_us", str(key[2]).encode())
            if made:
                self._files[made[0]] = _SetFiles.open(made)
        except OSError:
            self.remove(made)
            raise
        if made:
            self._limits[made[0]] = key
        return made

    def release(self, paths: list[str]) -> None:
        """The call that had ``paths`` has ended (``kill_all`` done): keep them for the next
        call with the same limits if they are as good as new, else remove them."""
        if not paths:
            return
        key = self._limits.get(paths[0])
        pooled = sum(len(sets) for sets in self._free.values())
        if key is None or pooled >= self.POOL or not self._as_new(paths):
            self._limits.pop(paths[0], None)
            self.remove(paths)
            return
        self._free.setdefault(key, []).append(paths)

    def _as_new(self, paths: list[str]) -> bool:
        """No process left, no OOM kill ever, under ``POOL_RESIDUE_BYTES`` still charged;
        then the memory high-water mark starts again from here."""
        files = self._files.get(paths[0])
        if files is None:
            return False
        try:
            if not files.empty(paths):
                return False
            if files.oom is not None and _oom_kills(_pread(files.oom)):
                return False
            if files.usage is not None and int(_pread(files.usage)) > self.POOL_RESIDUE_BYTES:
                return False
            if files.peak is not None:
                os.pwrite(files.peak, b"0", 0)  # (memsw's is never read)
        except (OSError, ValueError):
            return False
        return True

    def join_fds(self, paths: list[str]) -> list[int]:
        """Write-only fds of the set's ``cgroup.procs``: the call joins by writing ``0``.

        Opened by the server, so a call that runs as another user, in a sandbox without
        /sys, can still join its cgroups (and no other). The set's own, open as long as the
        set: whoever sends them to a call's process leaves them open."""
        return self._files[paths[0]].join

    def peak_memory(self, paths: list[str]) -> int | None:
        """The most memory the call's cgroup held at once (its pages and tmpfs, not the
        zygote's pages it shares), or None without a memory cgroup."""
        files = self._files.get(paths[0]) if paths else None
        if files is not None and files.peak is not None:
            with contextlib.suppress(OSError, ValueError):
                return int(_pread(files.peak))
        return None

    def oom_killed(self, paths: list[str]) -> bool:
        files = self._files.get(paths[0]) if paths else None
        if files is not None and files.oom is not None:
            with contextlib.suppress(OSError, ValueError):
                return _oom_kills(_pread(files.oom)) > 0
        return False

    def kill_all(self, paths: list[str]) -> None:
        """SIGKILL every process in the call's cgroups until none is left. A call's processes
        are in all of its cgroups (it joins each before its code runs; children inherit
        them), so one controller's list is enough: after every call, usually empty."""
        if not paths:
            return
        files = self._files.get(paths[0])
        with contextlib.suppress(OSError, ValueError):
            if files is not None and files.count is not None and files.empty(paths):
                return  # the pids controller counts none: no read of cgroup.procs needed
        procs = f"{paths[0]}/cgroup.procs"
        for _ in range(50):
            try:
                pids = {int(x) for x in _read(procs).split()}
            except (OSError, ValueError):
                return
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)

    def remove(self, paths: list[str]) -> None:
        files = self._files.pop(paths[0], None) if paths else None
        if files is not None:
            files.close()
        for p in [*self.leftovers, *paths]:
            try:
                os.rmdir(p)
            except FileNotFoundError:
                pass
            except OSError:
                if p not in self.leftovers:
                    self.leftovers.append(p)
                continue
            if p in self.leftovers:
                self.leftovers.remove(p)

    def close(self) -> None:
        for sets in self._free.values():
            for paths in sets:
                self.remove(paths)
        self._free.clear()
        self.remove([])
        for base in self.bases.values():
            for child in base.glob("c-*"):
                with contextlib.suppress(OSError):
                    os.rmdir(child)
            with contextlib.suppress(OSError):
                base.rmdir()


class LocalExecutor(Executor):
    def __init__(
        self,
        *,
        memory_budget_bytes: int = 2 * 1024**3,
        use_cgroups: bool = True,
        evict_interval_s: float = 5.0,
        isolation: str | Isolation | Callable[[], Isolation] = "none",
        isolation_uid_base: int = 200_000,
        isolation_uid_count: int = 65_536,
        hidden_paths: tuple[str, ...] | list[str] = (),
        network: NetworkPolicy | None = None,
        api_socket: str | None = None,
        api_port: int = DEFAULT_API_PORT,
        egress: Egress | None = None,
        code_root: str | None = None,
        env_root: str | None = None,
    ) -> None:
        """``isolation``: a mechanism to detect at start (``auto``, ``bwrap``…) or one detected
        already. ``network``: what sandboxes may reach; ``api_socket``: a Unix socket that
        serves this server's API, bound into each sandbox (``run/network.py``).

        ``code_root`` and ``env_root``: where every function's code and environments live.
        With both, functions of one environment share one zygote, each function sandboxed
        after the fork (where the isolation allows; the rest get a zygote of their own)."""
        self.memory_budget_bytes = memory_budget_bytes
        self.use_cgroups = use_cgroups
        self.evict_interval_s = evict_interval_s
        self.isolation_request = isolation
        self.uid_range = (isolation_uid_base, isolation_uid_count)
        self.hidden_paths = list(hidden_paths)
        self.network = network or NetworkPolicy()
        self.api_socket = api_socket
        self.api_port = api_port
        self.egress = egress
        self.code_root = os.path.abspath(code_root) if code_root else None
        self.env_root = os.path.abspath(env_root) if env_root else None
        self._shared: dict[str, EnvZygote] = {}  # by interpreter: shared environment zygotes
        self._own_egress = False
        self._socket_dir: str | None = None
        self._socket_ids = itertools.count(1)
        self.isolation = Isolation()
        self._interpreter_dirs: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        self.cgroups: Cgroups | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._envs: dict[str, EnvZygote] = {}
        self._functions: dict[tuple[str, str, str], FunctionZygote] = {}
        self._starting: dict[tuple[str, str, str], asyncio.Future[FunctionZygote]] = {}
        self._specs: dict[tuple[str, str, str], tuple[EnvironmentLike, str, str, dict[str, str]]] = {}
        self._restarts: dict[tuple[str, str, str], list[int]] = {}
        self._running: dict[int, Running] = {}
        self._spawned: dict[int, subprocess.Popen[bytes]] = {}
        self._spare_ids = itertools.count(1)
        self._stopping = False
        self._evictor: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # submitted on the loop's own thread

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Detect the isolation and limits, then run on ``loop`` (the server's, running in
        another thread), or on a loop in a thread of its own. On the server's loop a call
        crosses no thread: the request that accepts it submits it, its processes' messages
        arrive, and its end is recorded all on that loop (docs/architecture.md, "The call
        path"). Nothing here blocks that loop for long: process starts and reads of small
        files only; waits for processes are awaited or run in worker threads."""
        if self.loop is not None:
            return
        if isinstance(self.isolation_request, Isolation):
            self.isolation = self.isolation_request
        elif callable(self.isolation_request):
            self.isolation = self.isolation_request()
        else:
            self.isolation = detect(
                self.isolation_request,
                uid_base=self.uid_range[0],
                uid_count=self.uid_range[1],
                hidden=self.hidden_paths,
                policy=self.network,
                api_port=self.api_port,
            )
        if self.isolation.network:
            if self.egress is None:
                self.egress, self._own_egress = Egress(), True
            # short: a Unix socket's path must fit in 108 bytes; the sandboxes never see it
            self._socket_dir = tempfile.mkdtemp(prefix="fnhost-net-")
        self.cgroups = Cgroups() if self.use_cgroups else None
        if self.cgroups is not None and not self.cgroups.bases:
            self.cgroups = None
        log.info("local executor: isolation %s", self.isolation.describe())
        log.info(
            "local executor: limits enforced by %s",
            self.cgroups.describe() if self.cgroups else "rlimits only",
        )
        def start_evictor(loop: asyncio.AbstractEventLoop) -> None:
            self._evictor = loop.create_task(self._evict_loop())

        if loop is None:
            self.loop, self._thread = start_loop_thread("fnhost-executor", start_evictor)
        else:
            self.loop = loop
            loop.call_soon_threadsafe(start_evictor, loop)

    def stop(self) -> None:
        """From any thread but the loop's own (it waits for the loop to end every call)."""
        if self.loop is None:
            return
        self._stopping = True
        with contextlib.suppress(Exception):
            self._wait(self._shutdown(), 30)
        if self._thread is not None:  # a loop of our own
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self._thread = None
        self.loop = None
        if self.cgroups is not None:
            self.cgroups.close()
        if self._own_egress and self.egress is not None:
            self.egress.close()
            self.egress, self._own_egress = None, False
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    async def _shutdown(self) -> None:
        for call_id in list(self._running):
            self._cancel(call_id, "The server stopped while the call ran.")
        if self._evictor is not None:
            self._evictor.cancel()
        # let the cancelled calls record their outcome
        for _ in range(100):
            if not self._running:
                break
            await asyncio.sleep(0.02)
        owned = [fz.env for fz in self._functions.values() if fz.owns_env]
        for fz in list(self._functions.values()):
            fz.stop()
        self._functions.clear()
        loop = asyncio.get_running_loop()
        # every environment zygote (and so every sandbox) is gone and reaped before we return
        envs = [*self._envs.values(), *self._shared.values(), *owned]
        await asyncio.gather(*(loop.run_in_executor(None, e.stop) for e in envs))
        self._envs.clear()
        self._shared.clear()

    def _call_soon(self, coro: Any) -> Future[Any]:
        """Run ``coro`` on the executor's loop, from any thread, that loop's own included."""
        loop = self.loop
        if loop is None:
            coro.close()
            raise RuntimeError("the executor is not started")
        if not self._on_loop():
            return asyncio.run_coroutine_threadsafe(coro, loop)
        outcome: Future[Any] = Future()

        def settle(task: asyncio.Task[Any]) -> None:
            if task.cancelled():
                outcome.cancel()
            elif (exc := task.exception()) is not None:
                outcome.set_exception(exc)
            else:
                outcome.set_result(task.result())

        task = loop.create_task(coro)
        self._tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(settle)
        return outcome

    def _wait(self, coro: Any, timeout: float | None = None) -> Any:
        """``coro``'s result, for the blocking methods: never on the loop itself, which the
        wait would hold while ``coro`` needs it."""
        if self._on_loop():
            coro.close()
            raise RuntimeError("a blocking executor method was called on the executor's own event loop")
        return self._call_soon(coro).result(timeout)

    def _on_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    # -- public API ----------------------------------------------------------------------------
    def prepare(
        self,
        env: EnvironmentLike,
        code_dir: Path,
        function_path: str,
        env_vars: dict[str, str] | None = None,
        *,
        limits: CallLimits | None = None,
    ) -> PrepareResult:
        coro = self._prepare(env, str(code_dir), function_path, env_vars or {}, fresh=True, limits=limits)
        result: PrepareResult = self._wait(coro)
        return result

    def submit(self, job: CallJob) -> Future[CallOutcome]:
        return self._call_soon(self._run_safely(job))

    def cancel(self, call_id: int, message: str) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._cancel, call_id, message)

    def drop(self, code_dir: Path, message: str = "The function was deleted.") -> None:
        if self.loop is not None:
            self._wait(self._drop(str(code_dir), message), 30)

    def retire(self, code_dir: Path) -> None:
        if self.loop is not None:
            self._wait(self._retire(str(code_dir)), 30)

    def stats(self) -> dict[str, Any]:
        if self.loop is None:
            return {}

        async def collect() -> dict[str, Any]:
            envs = {h: {"pid": e.pid, "alive": e.alive} for h, e in self._envs.items()}
            envs.update({f"shared:{p}": {"pid": e.pid, "alive": e.alive, "pss": e.pss_bytes()}
                         for p, e in self._shared.items()})
            for key, f in self._functions.items():
                if f.owns_env:
                    envs[f"{key[0]}:{key[1]}"] = {"pid": f.env.pid, "alive": f.env.alive}
            return {
                "limits": self.cgroups.describe() if self.cgroups else "rlimits only",
                "isolation": self.isolation.mechanism,
                "privateTmp": self.isolation.private_tmp,
                "envs": envs,
                "functions": {
                    k[1]: {
                        "pid": f.pid,
                        "forkSafe": f.fork_safe,
                        "running": len(f.calls),
                        "sparePid": f.spare.pid if f.spare is not None else None,
                        "pss": f.pss_bytes(),
                        "shared": f.sandbox is not None,
                    }
                    for k, f in self._functions.items()
                },
                "running": len(self._running),
            }

        stats: dict[str, Any] = self._wait(collect(), 10)
        return stats

    # -- zygotes --------------------------------------------------------------------------------
    @staticmethod
    def _key(env: EnvironmentLike, code_dir: str, function_path: str) -> tuple[str, str, str]:
        return (str(env.hash), code_dir, function_path)

    async def _env_zygote(self, env: EnvironmentLike) -> EnvZygote:
        ez = self._envs.get(str(env.hash))
        if ez is None or not ez.alive:
            ez = EnvZygote(asyncio.get_running_loop(), str(env.hash), interpreter_of(env), env.site_dirs)
            ez.on_exit = self._env_exited
            ez.start()
            self._envs[str(env.hash)] = ez
            log.info("started environment zygote pid %s for %s", ez.pid, env.hash)
        await asyncio.wait_for(asyncio.shield(ez.ready), ZYGOTE_START_TIMEOUT_S)
        return ez

    async def _dedicated_env(self, env: EnvironmentLike, code_dir: str) -> EnvZygote:
        """An environment zygote for one function only, in its sandbox and as its uid."""
        iso = self.isolation
        python = interpreter_of(env)
        site_dirs = tuple(str(d) for d in env.site_dirs or ())
        loop = asyncio.get_running_loop()
        key = (python, site_dirs)
        if key not in self._interpreter_dirs:
            self._interpreter_dirs[key] = await loop.run_in_executor(
                None, interpreter_dirs, python, site_dirs
            )
        read_only = self._interpreter_dirs[key]
        iso.check_reachable([*read_only, code_dir])
        await loop.run_in_executor(None, iso.own_code_dir, code_dir)
        sockets, listener = self._sandbox_sockets(code_dir)
        ez = EnvZygote(
            loop,
            str(env.hash),
            python,
            site_dirs,
            command=lambda args: iso.command(
                python, args, code_dir=code_dir, read_only=read_only, sockets=sockets
            ),
            environ=iso.environ(clean_environ()),
            code_dir_inside=iso.code_dir_inside,
            private_tmp=iso.private_tmp,
        )
        ez.sockets = sockets
        if listener is not None:
            ez.cleanup.append(listener.close)
        try:
            ez.start()
        except BaseException:
            ez.stop(wait=False)
            raise
        log.info("started an isolated environment zygote pid %s for %s (%s)", ez.pid, env.hash, code_dir)
        try:
            await asyncio.wait_for(asyncio.shield(ez.ready), ZYGOTE_START_TIMEOUT_S)
        except BaseException:
            ez.stop(wait=False)
            raise
        return ez

    async def _shared_env(self, env: EnvironmentLike) -> EnvZygote:
        """The shared zygote of ``env``'s interpreter (it imports no function's packages)."""
        iso = self.isolation
        python = interpreter_of(env)
        ez = self._shared.get(python)
        if ez is None or not ez.alive:
            loop = asyncio.get_running_loop()
            key = (python, ())
            if key not in self._interpreter_dirs:
                self._interpreter_dirs[key] = await loop.run_in_executor(None, interpreter_dirs, python, ())
            assert self.code_root is not None and self.env_root is not None
            read_only = [*self._interpreter_dirs[key], self.env_root]
            code_root, socket_dir, api = self.code_root, self._socket_dir, self.api_socket
            ez = EnvZygote(
                loop,
                f"shared:{python}",
                python,
                (),
                command=lambda args: iso.shared_command(
                    python, args, read_only=read_only, code_root=code_root, socket_dir=socket_dir,
                    api_socket=api if iso.policy.api else None,
                ),
                environ=iso.environ(clean_environ()),
                code_dir_inside=lambda _: SANDBOX_CODE_DIR,
                private_tmp=iso.private_tmp,
            )
            ez.on_exit = self._shared_exited
            ez.start()
            self._shared[python] = ez
            log.info("started the shared environment zygote pid %s for %s", ez.pid, python)
        await asyncio.wait_for(asyncio.shield(ez.ready), ZYGOTE_START_TIMEOUT_S)
        return ez

    def _shared_exited(self, ez: EnvZygote) -> None:
        for python, known in list(self._shared.items()):
            if known is ez:
                del self._shared[python]
                if not self._stopping:
                    log.warning("the shared environment zygote pid %s for %s exited", ez.pid, python)

    def _shareable(self, env: EnvironmentLike, code_dir: str) -> bool:
        """Whether this function may live in a fork of its environment's shared zygote."""
        if not self.isolation.shares or self.code_root is None or self.env_root is None:
            return False
        roots = [self.env_root]
        python = interpreter_of(env)
        inside = [python, *(str(d) for d in env.site_dirs or ())]
        return _is_under(code_dir, [self.code_root]) and all(_is_under(p, roots) for p in inside)

    def _sandbox_spec(
        self, env: EnvironmentLike, code_dir: str, sockets: Sockets
    ) -> protocol.FunctionSandbox:
        iso = self.isolation
        assert self.code_root is not None and self.env_root is not None
        python = interpreter_of(env)
        site_dirs = [str(d) for d in env.site_dirs or ()]
        keep = [d for d in self._interpreter_dirs[(python, ())] if _is_under(d, [self.env_root])]
        inside_sockets = {}
        if sockets.api is not None:
            inside_sockets[SANDBOX_API_SOCKET] = SANDBOX_API_SOCKET
        if sockets.egress is not None:
            inside_sockets[SANDBOX_EGRESS_SOCKET] = f"{SANDBOX_SOCKET_DIR}/{os.path.basename(sockets.egress)}"
        return protocol.FunctionSandbox(
            uid=iso.uid_for(code_dir),
            code_dir=f"{SANDBOX_CODE_ROOT}/{os.path.relpath(code_dir, self.code_root)}",
            keep=[*keep, *site_dirs],
            hide=[SANDBOX_CODE_ROOT, self.env_root, SANDBOX_SOCKET_DIR],
            sockets=inside_sockets,
            network=iso.network,
            forwards=iso.forwards(sockets.api is not None, sockets.egress is not None) if iso.network else [],
            site_dirs=site_dirs,
        )

    def _sandbox_sockets(self, code_dir: str) -> tuple[Sockets, Listener | None]:
        """The host sockets one function's sandbox reaches out through, per its policy."""
        iso = self.isolation
        if not iso.network or self.egress is None or self._socket_dir is None:
            return Sockets(), None
        policy = iso.policy
        listener = None
        egress_path = None
        if policy.egress:
            egress_path = os.path.join(self._socket_dir, f"egress-{next(self._socket_ids)}.sock")
            listener = self.egress.proxy(egress_path, policy, name=f"function {os.path.basename(code_dir)}")
        api = self.api_socket if policy.api else None
        return Sockets(api=api, egress=egress_path), listener

    def _env_exited(self, ez: EnvZygote) -> None:
        if self._envs.get(ez.env_hash) is ez:
            del self._envs[ez.env_hash]
            if not self._stopping:
                log.warning("environment zygote pid %s for %s exited", ez.pid, ez.env_hash)

    async def _prepare(
        self,
        env: EnvironmentLike,
        code_dir: str,
        function_path: str,
        env_vars: dict[str, str],
        *,
        fresh: bool,
        limits: CallLimits | None = None,
    ) -> PrepareResult:
        key = self._key(env, code_dir, function_path)
        try:
            fz = await self._function_zygote(env, code_dir, function_path, env_vars, fresh=fresh)
        except _ImportFailed as exc:
            return PrepareResult(False, exc.message, exc.trace)
        except (ZygoteDied, TimeoutError, OSError, IsolationUnavailable, subprocess.SubprocessError) as exc:
            self._specs.pop(key, None)
            return PrepareResult(False, f"The function's environment could not start: {exc}")
        fork_safe = fz.fork_safe and fz.env.fork_safe
        if fork_safe and limits is not None:
            # the first call finds its process forked and in its cgroups, as the next ones do
            # (a first write to a v1 cgroup.procs waits ~10 ms for an RCU grace period): the
            # function is Ready, and called, only once that process is up
            self._make_spare(fz, limits)
            if fz.spare is not None and fz.spare.up is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fz.spare.up), SPARE_UP_TIMEOUT_S)
        return PrepareResult(True, fork_safe=fork_safe, args=fz.args)

    async def _function_zygote(
        self,
        env: EnvironmentLike,
        code_dir: str,
        function_path: str,
        env_vars: dict[str, str],
        *,
        fresh: bool = False,
    ) -> FunctionZygote:
        key = self._key(env, code_dir, function_path)
        starting = self._starting.get(key)
        if starting is not None:
            return await asyncio.shield(starting)
        current = self._functions.get(key)
        if current is not None and current.alive and not fresh:
            return current
        future: asyncio.Future[FunctionZygote] = asyncio.get_running_loop().create_future()
        self._starting[key] = future
        try:
            if current is not None and fresh:
                if current.calls:
                    current.retired = True  # its running calls finish in it; then it goes
                else:
                    current.stop()
            dedicated = self.isolation.dedicated
            sandbox: protocol.FunctionSandbox | None = None
            listener: Listener | None = None
            if dedicated and self._shareable(env, code_dir):
                ez = await self._shared_env(env)
                if _shadows(ez.modules, env.site_dirs):
                    ez = await self._dedicated_env(env, code_dir)  # its own packages win
                else:
                    dedicated = False
                    await asyncio.get_running_loop().run_in_executor(None, self.isolation.own_code_dir, code_dir)
                    sockets, listener = self._sandbox_sockets(code_dir)
                    sandbox = self._sandbox_spec(env, code_dir, sockets)
            else:
                ez = await (self._dedicated_env(env, code_dir) if dedicated else self._env_zygote(env))
            try:
                fz = ez.fork_function(code_dir, function_path, env_vars, sandbox=sandbox)
            except BaseException:
                if dedicated:
                    ez.stop(wait=False)
                if listener is not None:
                    listener.close()
                raise
            fz.owns_env = dedicated
            fz.sockets = ez.sockets if sandbox is None else sockets
            if listener is not None:
                fz.cleanup.append(listener.close)
            fz.on_exit = self._function_exited
            try:
                msg = await asyncio.wait_for(asyncio.shield(fz.ready), ZYGOTE_START_TIMEOUT_S)
            except TimeoutError:
                fz.stop()
                raise _ImportFailed(
                    f"Importing {function_path} took longer than {ZYGOTE_START_TIMEOUT_S:g} s.", ""
                ) from None
            except ZygoteDied:
                fz.stop()
                raise
            if not msg.ok:
                fz.stop()
                raise _ImportFailed(msg.message, msg.trace)
            self._functions[key] = fz
            self._specs[key] = (env, code_dir, function_path, env_vars)
            future.set_result(fz)
            return fz
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters get it through their own await
            raise
        finally:
            del self._starting[key]

    def _function_exited(self, fz: FunctionZygote) -> None:
        if fz.owns_env:
            fz.env.stop(wait=False)  # the rest of its sandbox
        key = next((k for k, v in self._functions.items() if v is fz), None)
        if key is None:
            return
        del self._functions[key]
        if fz.dropped or self._stopping:
            return
        log.warning("function zygote pid %s for %s exited unexpectedly; restarting", fz.pid, key[1])
        now = now_ms()
        recent = [t for t in self._restarts.get(key, []) if now - t < 60_000] + [now]
        self._restarts[key] = recent
        spec = self._specs.get(key)
        if spec is not None and len(recent) <= RESTARTS_PER_MINUTE:
            asyncio.get_running_loop().create_task(self._prepare(*spec, fresh=False))

    async def _drop(self, code_dir: str, message: str) -> None:
        for key, fz in list(self._functions.items()):
            if key[1] != code_dir:
                continue
            for call_id in list(fz.calls):
                self._cancel(call_id, message)
            del self._functions[key]
            self._specs.pop(key, None)
            fz.stop()
        for call_id, run in list(self._running.items()):
            if run.code_dir == code_dir:
                self._cancel(call_id, message)

    async def _retire(self, code_dir: str) -> None:
        for key, fz in list(self._functions.items()):
            if key[1] != code_dir:
                continue
            del self._functions[key]  # the next call of this code starts a zygote of its own
            self._specs.pop(key, None)
            if fz.calls:
                fz.retired = True  # its running calls finish in it; then it goes (``_run``)
            else:
                fz.stop()

    async def _evict_loop(self) -> None:
        while True:
            await asyncio.sleep(self.evict_interval_s)
            try:
                self._evict()
            except Exception:
                log.exception("zygote eviction failed")

    def _evict(self) -> None:
        sizes = {k: f.pss_bytes() for k, f in self._functions.items()}
        total = sum(sizes.values())
        if total <= self.memory_budget_bytes:
            return
        idle = sorted((f.last_used, k) for k, f in self._functions.items() if not f.calls)
        for _, key in idle:
            if total <= self.memory_budget_bytes:
                break
            fz = self._functions.pop(key)
            log.info("evicting idle function zygote pid %s (%s) over the memory budget", fz.pid, key[1])
            fz.stop()
            total -= sizes[key]

    # -- calls ---------------------------------------------------------------------------------
    def _cancel(self, call_id: int, message: str) -> None:
        run = self._running.get(call_id)
        if run is None or run.cancel_message is not None:
            return
        run.cancel_message = message
        kill_call(run, self.cgroups)
        proc = self._spawned.get(call_id)
        if proc is not None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)

    def _make_spare(self, fz: FunctionZygote, limits: CallLimits) -> None:
        """Fork the next call's process now, while nobody waits (see bootstrap._spare)."""
        if not fz.alive or fz.dropped or fz.retired or fz.spare is not None:
            return
        spare = Spare(next(self._spare_ids), limits)
        try:
            if self.cgroups is not None:
                spare.cgroups = self.cgroups.take(limits)
                spare.cgroup_fds = self.cgroups.join_fds(spare.cgroups)
            fz.on_spare_gone = self._spare_gone
            fz.add_spare(spare)
        except (OSError, ZygoteDied) as exc:
            log.warning("no spare process for %s: %s", fz.code_dir, exc)
            self._spare_gone(spare)

    def _spare_gone(self, spare: Spare) -> None:
        spare.cgroup_fds = []  # the set's (Cgroups.join_fds), closed with it
        if self.cgroups is not None and spare.cgroups:
            self.cgroups.release(spare.cgroups)  # removed later if its process has not gone yet

    async def _run_safely(self, job: CallJob) -> CallOutcome:
        start = now_ms()
        try:
            return await self._run(job)
        except Exception as exc:
            log.exception("call %s could not run", job.call_id)
            return CallOutcome(
                "Failed",
                error={"message": f"The call could not run: {type(exc).__name__}: {exc}", "trace": ""},
                start_ms=start,
                end_ms=now_ms(),
            )

    async def _run(self, job: CallJob) -> CallOutcome:
        loop = asyncio.get_running_loop()
        start = now_ms()
        code_dir = str(job.code_dir)
        key = self._key(job.env, code_dir, job.function_path)
        fz = self._functions.get(key)
        mode = "fork"
        if fz is None or not fz.alive:
            mode = "fork-cold"
            try:
                fz = await self._function_zygote(job.env, code_dir, job.function_path, job.env_vars)
            except _ImportFailed as exc:
                return CallOutcome(
                    "Failed",
                    error={"message": exc.message, "trace": exc.trace},
                    logs=[(now_ms(), line) for line in exc.trace.splitlines()],
                    start_ms=start,
                    end_ms=now_ms(),
                    mode=mode,
                )
        fork_ok = fz.fork_safe and fz.env.fork_safe
        if not fork_ok:
            mode = "spawn"
        limits = job.limits
        token = job.token() if job.token is not None and "client" in fz.args else None
        iso = self.isolation
        no_pids_cgroup = self.cgroups is None or "pids" not in self.cgroups.bases
        no_memory_cgroup = self.cgroups is None or not self.cgroups.memory
        spec = protocol.JobSpec(
            call_id=job.call_id if job.info_call_id is None else job.info_call_id,
            function_id=job.function_id,
            project=job.project,
            code_dir=iso.code_dir_inside(code_dir),
            function_path=job.function_path,
            data=job.data,
            secrets=job.secrets,
            env_vars=job.env_vars,
            base_url=iso.api_url_inside(job.base_url) if iso.dedicated else job.base_url,
            token=token,
            schedule_id=job.schedule_id,
            scheduled_time=job.scheduled_time,
            function_version=job.function_version,
            limits=protocol.Limits(
                memory_bytes=limits.memory_bytes,
                max_file_bytes=limits.max_file_bytes,
                max_open_files=limits.max_open_files,
                response_max_bytes=limits.response_max_bytes,
                cpu_seconds=limits.cpu_seconds(),
                # RLIMIT_NPROC counts every process of the uid: a fallback only
                max_processes=limits.max_processes if no_pids_cgroup else None,
                address_space_bytes=limits.memory_bytes if no_memory_cgroup else None,
            ),
            # a fresh interpreter in a sandbox of its own (spawn) has a private /tmp already
            private_tmp=iso.private_tmp and (fork_ok or iso.mechanism != "bwrap"),
        )
        run = Running(job.call_id, loop.create_future(), code_dir=code_dir)
        cgroup_fds: list[int] = []
        spare = fz.take_spare(limits) if fork_ok else None
        if spare is not None:
            mode = "fork-spare"
            run.cgroups, cgroup_fds = spare.cgroups, spare.cgroup_fds
        elif self.cgroups is not None:
            run.cgroups = self.cgroups.take(limits)
            cgroup_fds = self.cgroups.join_fds(run.cgroups)
        job_fd = os.memfd_create("fnhost-job", os.MFD_CLOEXEC)
        result_fd = os.memfd_create("fnhost-result", os.MFD_CLOEXEC)
        log_r, log_w = os.pipe2(os.O_CLOEXEC)
        secrets = list(job.secrets.values())
        collector = LogCollector(loop, log_r, secrets, limits.log_max_bytes)
        collector.on_line = job.on_log
        self._running[job.call_id] = run
        timed_out = False
        try:
            payload = spec.dumps()
            view = memoryview(payload)
            while view:
                view = view[os.write(job_fd, view):]
            started = now_ms()
            try:
                if spare is not None:
                    fz.run_on_spare(run, spare, (job_fd, log_w, result_fd))
                elif fork_ok:
                    fz.run(run, (job_fd, log_w, result_fd, *cgroup_fds))
                else:
                    await self._spawn(job, run, (job_fd, log_w, result_fd), cgroup_fds, fz.sockets)
            finally:
                os.close(job_fd)
                os.close(log_w)
            # the next call of this function finds a process ready for it: forked once this
            # call's process has exited, or SPARE_DURING_CALL_S into a longer call. Not at
            # once: forked beside the call, sequential trivial calls took ~1.2 ms longer end
            # to end (the spare's fork and its move into its cgroups compete with the call;
            # the move takes cgroup_threadgroup_rwsem for writing, which an exit reads)
            spare_later = loop.call_later(SPARE_DURING_CALL_S, self._make_spare, fz, limits) if fork_ok else None
            try:
                code, sig = await asyncio.wait_for(asyncio.shield(run.exit), limits.timeout_s)
            except TimeoutError:
                timed_out = True
                kill_call(run, self.cgroups)
                code, sig = await self._exit_after_kill(run)
            except ZygoteDied:
                code, sig = None, None
            end = now_ms()
            kill_call(run, self.cgroups)  # nothing the call started outlives it
            if spare_later is not None:
                spare_later.cancel()
                self._make_spare(fz, limits)
            if not collector.eof.done():  # usually it is: the pipe ends as the process exits
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(collector.eof), LOG_DRAIN_TIMEOUT_S)
            collector.close()
            usage = self._usage(run)
            outcome = self._outcome(job, run, result_fd, code, sig, timed_out, usage)
            outcome.usage = usage
            outcome.logs = collector.lines
            if outcome.status != "Completed" and outcome.error and outcome.mode != "reported":
                collector.truncated = False
                collector.max_bytes += 1024
                collector.add(f"[fnhost] {outcome.error['message']}")
            if outcome.error:
                outcome.error = {k: collector.redact(v) for k, v in outcome.error.items()}
            outcome.start_ms, outcome.end_ms, outcome.mode = started, end, mode
            return outcome
        finally:
            self._running.pop(job.call_id, None)
            self._spawned.pop(job.call_id, None)
            collector.close()
            os.close(result_fd)
            if self.cgroups is not None and run.cgroups:
                self.cgroups.release(run.cgroups)
            if fz.retired and not fz.calls and not fz.dropped:
                fz.stop()

    async def _exit_after_kill(self, run: Running) -> tuple[int | None, int | None]:
        try:
            return await asyncio.wait_for(asyncio.shield(run.exit), 10)
        except (TimeoutError, ZygoteDied):
            return None, signal.SIGKILL

    async def _spawn(
        self,
        job: CallJob,
        run: Running,
        fds: tuple[int, int, int],
        cgroup_fds: list[int],
        sockets: Sockets | None = None,
    ) -> None:
        """A fresh interpreter for handlers that cannot be forked (threads at import)."""
        loop = asyncio.get_running_loop()
        job_fd, log_w, result_fd = fds
        python = interpreter_of(job.env)
        args = [
            "run", "--job-fd", str(job_fd), "--log-fd", str(log_w), "--result-fd", str(result_fd),
            *[a for fd in cgroup_fds for a in ("--cgroup-fd", str(fd))],
            *site_args(job.env.site_dirs),
        ]
        iso = self.isolation
        code_dir = str(job.code_dir)
        if iso.dedicated:
            site_dirs = tuple(str(d) for d in job.env.site_dirs or ())
            key = (python, site_dirs)
            if key not in self._interpreter_dirs:
                self._interpreter_dirs[key] = await loop.run_in_executor(None, interpreter_dirs, python, site_dirs)
            read_only = self._interpreter_dirs[key]
            argv = iso.command(python, args, code_dir=code_dir, read_only=read_only, sockets=sockets)
        else:
            argv = default_command(python, args)
        proc = subprocess.Popen(
            argv,
            pass_fds=(*fds, *cgroup_fds),
            env=iso.environ(clean_environ()),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/" if iso.mechanism == "bwrap" else code_dir,
            start_new_session=iso.mechanism == "bwrap",
        )
        run.pid = proc.pid
        self._spawned[job.call_id] = proc
        # bubblewrap reports a child killed by signal N as exit code 128 + N
        sandboxed = iso.mechanism == "bwrap"

        def wait() -> None:
            _, status, rusage = os.wait4(proc.pid, 0)  # its accounting includes the call it waited for
            proc.returncode = 0  # reaped here; keep Popen from waiting again
            run.rusage = protocol.Exit(job.call_id, proc.pid, status, rusage.ru_utime, rusage.ru_stime, rusage.ru_maxrss)
            code, sig = decode_status(status)
            if sandboxed and sig is None and code is not None and 128 < code < 128 + 65:
                sig = code - 128
                code = None

            def report() -> None:
                if not run.exit.done():
                    run.exit.set_result((code, sig))

            loop.call_soon_threadsafe(report)

        loop.run_in_executor(None, wait)

    def _usage(self, run: Running) -> protocol.Usage:
        """What the call used: CPU from its process's accounting (it and the children it
        waited for), peak memory from its memory cgroup where it had one."""
        reported = run.rusage
        usage = protocol.Usage()
        if reported is not None:
            usage = protocol.Usage(reported.user_s, reported.system_s, reported.max_rss_kb * 1024)
        if self.cgroups is not None and run.cgroups:
            peak = self.cgroups.peak_memory(run.cgroups)
            if peak is not None:
                usage.peak_memory_bytes, usage.source = peak, "cgroup"
        return usage

    def _outcome(
        self,
        job: CallJob,
        run: Running,
        result_fd: int,
        code: int | None,
        sig: int | None,
        timed_out: bool,
        usage: protocol.Usage | None = None,
    ) -> CallOutcome:
        limits = job.limits
        if run.cancel_message is not None:
            return CallOutcome("Failed", error={"message": run.cancel_message, "trace": ""})
        if timed_out:
            return CallOutcome(
                "Timeout",
                error={
                    "message": f"The call did not finish within its time limit of {limits.timeout_s:g} "
                    "seconds and was stopped.",
                    "trace": "",
                },
            )
        size = os.fstat(result_fd).st_size
        os.lseek(result_fd, 0, os.SEEK_SET)
        head = os.read(result_fd, 4)
        if head.startswith(b"OK\n") and size - 3 <= limits.response_max_bytes:
            body = head[3:] + _read_all(result_fd, size - 4)
            try:  # the memfd is the call's own: its code can write anything there and exit
                response = body.decode()
                json.loads(response)
            except ValueError:
                return CallOutcome(
                    "Failed",
                    error={"message": "The call's result is not valid JSON: its code wrote to the "
                           "descriptor fnhost reads the result from.", "trace": ""},
                )
            return CallOutcome("Completed", response=response)
        if head.startswith(b"ERR\n") and size < 16 * 1024 * 1024:
            error = json.loads(_read_all(result_fd, size - 4))
            out = CallOutcome("Failed", error={"message": error["message"], "trace": error.get("trace", "")})
            out.mode = "reported"  # the bootstrap already wrote it to the call's log
            return out
        memory_gb = f"{limits.memory_bytes / 1024**3:g} GB"
        if sig == signal.SIGKILL and self.cgroups is not None and self.cgroups.oom_killed(run.cgroups):
            used = f" It had used {usage.peak_memory_bytes / 1024**3:.3g} GB." if usage and usage.peak_memory_bytes else ""
            message = f"MemoryError: the function ran out of memory (limit {memory_gb}) and was stopped.{used}"
        elif run.lost:
            message = run.lost
        elif sig == signal.SIGXFSZ:
            message = f"The call wrote a file larger than the limit of {limits.max_file_bytes} bytes."
        elif sig == signal.SIGXCPU:
            message = (
                f"The call used more than its {limits.cpu_seconds()} seconds of CPU time and was stopped."
            )
        elif sig is not None:
            message = f"The call's process was killed by {signal_name(sig)} before returning a result."
        elif head.startswith(b"OK\n"):
            message = f"The response is larger than the limit of {limits.response_max_bytes} bytes."
        else:
            message = (
                f"The call's process exited with code {code} before returning a result "
                "(did the code call os._exit() or sys.exit() in a thread?)."
            )
        return CallOutcome("Failed", error={"message": message, "trace": ""})


def _oom_kills(oom_control: bytes) -> int:
    """The ``oom_kill`` count of a memory cgroup's ``memory.oom_control``."""
    for line in oom_control.splitlines():
        name, _, value = line.partition(b" ")
        if name == b"oom_kill":
            return int(value)
    return 0


def _limits_key(limits: CallLimits) -> tuple[int, int, int]:
    """What a call's cgroups hold of its limits."""
    return limits.memory_bytes, limits.max_processes, max(1000, int(limits.cpu * 100000))


@dataclass
class _SetFiles:
    """The files of a set of call cgroups that the server reads or writes at every call,
    open from the set's making to its removal: each open is a path walk through cgroupfs,
    and a call's cgroups took nine of them. (Not ``cgroup.procs`` for reading: ``_read``.)"""

    join: list[int]  # each controller's cgroup.procs, write-only (``Cgroups.join_fds``)
    count: int | None = None  # pids.current: the set's processes, zombies included
    peak: int | None = None  # memory.max_usage_in_bytes, read and reset
    usage: int | None = None  # memory.usage_in_bytes
    oom: int | None = None  # memory.oom_control

    @classmethod
    def open(cls, paths: list[str]) -> _SetFiles:
        files = cls(join=[])
        try:
            for p in paths:
                files.join.append(os.open(f"{p}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
                if "/pids/" in p:
                    files.count = os.open(f"{p}/pids.current", os.O_RDONLY | os.O_CLOEXEC)
                elif "/memory/" in p:
                    files.peak = os.open(f"{p}/memory.max_usage_in_bytes", os.O_RDWR | os.O_CLOEXEC)
                    files.usage = os.open(f"{p}/memory.usage_in_bytes", os.O_RDONLY | os.O_CLOEXEC)
                    files.oom = os.open(f"{p}/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            files.close()
            raise
        return files

    def empty(self, paths: list[str]) -> bool:
        """No process in the set: none counted by the pids controller (a read of a kept
        file), or, without one, none in a fresh read of ``cgroup.procs``."""
        if self.count is not None:
            return int(_pread(self.count)) == 0
        return not _read(f"{paths[0]}/cgroup.procs").strip()

    def close(self) -> None:
        for fd in [*self.join, self.count, self.peak, self.usage, self.oom]:
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.join, self.count, self.peak, self.usage, self.oom = [], None, None, None, None


def _pread(fd: int) -> bytes:
    """A kept cgroupfs file read whole from its start: a read at offset 0 makes the kernel
    show the file afresh (seq_file), which is right for every file but v1's ``cgroup.procs``."""
    return os.pread(fd, 1 << 12, 0)


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _read(path: str) -> bytes:
    """A small kernel file (cgroupfs: one read returns it whole, up to a page), opened for
    this read. Not through a descriptor kept open: cgroup v1 keeps the pid list an open
    ``cgroup.procs`` read first, so a kept one misses a process that joined since (the test
    of a process that left its call's session, in tests/test_executor.py, catches that)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 1 << 16)
    finally:
        os.close(fd)


def _is_under(path: str, roots: list[str]) -> bool:
    path = os.path.abspath(path)
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _shadows(preloaded: list[str] | tuple[str, ...], site_dirs: Any) -> bool:
    """Whether a function's own packages (``site_dirs``) hold a top-level module that the
    shared zygote imported already: that function needs an interpreter of its own, or it
    would get the shared zygote's copy instead of its pin."""
    loaded = set(preloaded)
    for d in site_dirs or ():
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            top = name.split(".", 1)[0].split("-", 1)[0]
            if name.endswith((".dist-info", ".egg-info", ".data", ".pth")) or name in ("bin", "__pycache__"):
                continue
            if top in loaded:
                return True
    return False


def _sweep(parent: Path) -> None:
    """Remove the cgroup directories of fnhost servers that are gone (a server killed with
    SIGKILL cannot remove its own): ``fnhost-<pid>[-<n>]`` whose process no longer exists."""
    with contextlib.suppress(OSError):
        for base in parent.glob("fnhost-*"):
            pid = base.name.removeprefix("fnhost-").split("-", 1)[0]
            if not pid.isdigit() or Path(f"/proc/{pid}").exists():
                continue
            for child in base.iterdir():
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                base.rmdir()


def _read_all(fd: int, n: int) -> bytes:
    chunks = []
    while n > 0:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


class _ImportFailed(Exception):
    def __init__(self, message: str, trace: str) -> None:
        super().__init__(message)
        self.message = message
        self.trace = trace
