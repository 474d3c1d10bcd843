"""Builds: turn a Queued function into a Ready (or Failed) one.

One build, in order: claim the function with a lease (any replica may build it) and mark
it Deploying; extract its zip safely into ``{home}/code/<id>``; check the handler
statically; resolve its environment (``build/envs.py``: wheels on the host, anything that
runs code in the function's sandbox); import the handler in the function's zygote, in its
sandbox (the executor's ``prepare``); then Ready, or Failed with ``error = {"message", "trace"}``. Build work runs in threads, so the event loop keeps
serving requests; a few builds may run at once. The lease is renewed while a build runs,
so a replica that dies mid-build releases its functions within ``LEASE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fnhost.build import handler, zips
from fnhost.build.envs import BuildSandbox, Environment, EnvironmentCache, requirements_of
from fnhost.build.runtimes import Runtime
from fnhost.build.zips import CodeError, ZipLimits
from fnhost.clock import now_ms
from fnhost.core.loop import Service
from fnhost.core.replicas import owner_is_dead
from fnhost.errors import NotFound
from fnhost.metrics import Metrics
from fnhost.run.abc import CallLimits, PrepareResult
from fnhost.services.files import Files
from fnhost.services.functions import Functions
from fnhost.settings import Settings
from fnhost.statuses import FunctionStatus, function_moves
from fnhost.store import functions as store
from fnhost.store import versions as version_store
from fnhost.store.db import Database
from fnhost.store.functions import FunctionRow

log = logging.getLogger("fnhost.build")

LEASE_SECONDS = 30
MAX_CONCURRENT_BUILDS = 2
class Prepare(Protocol):
    """The executor's ``prepare``: import the handler in its environment, in its sandbox, and
    keep the process warm for calls, one made already for calls with ``limits``."""

    def __call__(
        self,
        env: Environment,
        code_dir: Path,
        function_path: str,
        env_vars: dict[str, str] | None = None,
        *,
        limits: CallLimits | None = None,
    ) -> PrepareResult: ...


@dataclass(frozen=True)
class PreparedFunction:
    code_dir: Path
    env: Environment


def zip_limits(settings: Settings) -> ZipLimits:
    return ZipLimits(settings.max_zip_entries, settings.max_code_bytes, settings.max_zip_ratio)


class Builder(Service):
    name = "builder"
    interval = 2.0  # other replicas' new functions are found by polling; ours wake us

    def __init__(
        self,
        *,
        db: Database,
        files: Files,
        functions: Functions,
        settings: Settings,
        runtimes: dict[str, Runtime],
        home: Path,
        replica_id: str,
        prepare: Prepare,
        metrics: Metrics | None = None,
        sandbox: BuildSandbox | None = None,
    ) -> None:
        super().__init__()
        self.db = db
        self.files = files
        self.functions = functions
        self.settings = settings
        self.runtimes = runtimes
        self.code_root = home / "code"
        self.replica_id = replica_id
        self.envs = EnvironmentCache(settings, runtimes, sandbox)
        self.metrics = metrics
        if metrics is not None:
            self.envs.on_lookup.append(metrics.environment)
        self.limits = zip_limits(settings)
        self.prepare = prepare
        self._running: set[asyncio.Task[None]] = set()
        self._event_loop: asyncio.AbstractEventLoop | None = None

    # -- service ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        self.envs._closed = False
        await asyncio.to_thread(self.recover)
        await super().start()
        # build the default runtime's baseline now, so the first deploy does not wait for it
        if self.settings.default_runtime in self.runtimes:
            self._track(asyncio.create_task(self._prewarm(self.settings.default_runtime)))

    async def stop(self) -> None:
        await super().stop()
        self.envs.close()  # kills running installers; their builds end quickly
        for task in list(self._running):
            task.cancel()
        for task in list(self._running):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def run_once(self) -> None:
        while (
            sum(1 for t in self._running if t.get_name().startswith("build-"))
            < MAX_CONCURRENT_BUILDS
        ):
            claimed = await asyncio.to_thread(self._claim)
            if claimed is None:
                return
            self._track(asyncio.create_task(self._build(claimed), name=f"build-{claimed}"))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._running.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._running.discard(t)
            if not self._stopping:
                self.wake()  # a slot is free: look for more work

        task.add_done_callback(done)

    async def _prewarm(self, runtime: str) -> None:
        try:
            await asyncio.to_thread(self.envs.baseline, runtime)
        except CodeError as exc:
            log.error("building the %s baseline failed: %s\n%s", runtime, exc.message, exc.trace)

    def recover(self) -> int:
        """Builds left Deploying by a server that is gone start again now, not when the lease ends."""
        count = 0
        with self.db.write() as s:
            for row in store.builds_in_progress(session=s):
                owner = row.build_owner
                if owner is None or owner == self.replica_id:
                    continue
                if not owner_is_dead(owner, shared_with_other_hosts=not self.db.is_sqlite):
                    continue
                row.build_lease_until = None
                count += 1
                log.warning(
                    "function %s: its build was interrupted (the server building it stopped); "
                    "building it again", row.id
                )
        return count

    # -- hooks from the Functions service (called in request threads; wired by fnhost.system) --
    def function_created(self, function_id: int) -> None:
        loop = self._event_loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.wake)

    def function_deleted(self, project: str, function_id: int) -> None:
        shutil.rmtree(self.code_dir(function_id), ignore_errors=True)
        for later in self.code_root.glob(f"{function_id}-v*"):
            shutil.rmtree(later, ignore_errors=True)

    # -- one build ---------------------------------------------------------------------------
    def code_dir(self, function_id: int, version: int = 1) -> Path:
        """Where a version's code is extracted: ``<id>`` for version 1 (as before versions),
        ``<id>-v<n>`` after it (the part before the dash names the function's uid)."""
        return self.code_root / (str(function_id) if version == 1 else f"{function_id}-v{version}")

    def _claim(self) -> int | None:
        now = now_ms()
        with self.db.write() as s:
            row = store.claim_next_build(self.replica_id, now, LEASE_SECONDS * 1000, session=s)
            if row is None:
                return None
            if row.status != FunctionStatus.DEPLOYING:  # else a build whose builder's lease ran out: ours now
                row.status = function_moves(row.status, FunctionStatus.DEPLOYING)
            return row.id

    def _renew(self, function_id: int) -> bool:
        with self.db.write() as s:
            row = store.get_any(function_id, session=s)
            if row is None or row.build_owner != self.replica_id or row.status != FunctionStatus.DEPLOYING:
                return False
            row.build_lease_until = now_ms() + LEASE_SECONDS * 1000
            return True

    async def _build(self, function_id: int) -> None:
        work = asyncio.create_task(asyncio.to_thread(self.build_one, function_id))
        while True:
            done, _ = await asyncio.wait({work}, timeout=LEASE_SECONDS / 3)
            if done:
                work.result()
                return
            await asyncio.to_thread(self._renew, function_id)

    def build_one(self, function_id: int) -> None:
        """Build the claimed function and record the outcome (never raises for user errors)."""
        with self.db.read() as s:
            row = store.get_any(function_id, session=s)
        if row is None:
            return
        started = now_ms()
        try:
            prepared = self._prepare(row, fresh=True)
            self._import_check(row, prepared)
        except CodeError as exc:
            self._finish(function_id, FunctionStatus.FAILED, {"message": exc.message, "trace": exc.trace}, None)
            log.info("function %s failed to build: %s", function_id, exc.message)
            return
        except Exception as exc:
            log.exception("function %s: unexpected build error", function_id)
            self._finish(
                function_id,
                FunctionStatus.FAILED,
                {
                    "message": f"Function deployment failed: {type(exc).__name__}: {exc}",
                    "trace": traceback.format_exc(),
                },
                None,
            )
            return
        self._finish(function_id, FunctionStatus.READY, None, prepared.env.hash)
        log.info(
            "function %s ready in %d ms (env %s)",
            function_id,
            now_ms() - started,
            prepared.env.hash,
        )

    def _finish(
        self, function_id: int, status: FunctionStatus, error: dict[str, Any] | None, env_hash: str | None
    ) -> None:
        with self.db.write() as s:
            row = store.get_any(function_id, session=s)
            if row is None:  # deleted while building
                shutil.rmtree(self.code_dir(function_id), ignore_errors=True)
                return
            if row.build_owner != self.replica_id or row.status != FunctionStatus.DEPLOYING:
                return  # our lease ran out and another builder took over
            row.status = function_moves(row.status, status)
            row.error = error
            row.env_hash = env_hash
            row.ready_time = now_ms() if status == FunctionStatus.READY else None
            row.build_owner = None
            row.build_lease_until = None
            version_store.record_first_build(
                function_id, row.status, error, env_hash, row.ready_time, session=s
            )
            if self.metrics is not None:
                self.metrics.deploy_finished(status, (now_ms() - row.created_time) / 1000)

    def _prepare(self, row: FunctionRow, *, fresh: bool) -> PreparedFunction:
        code_dir = self.code_dir(row.id, row.version)
        if fresh or not code_dir.is_dir():
            try:
                data = self.files.content(row.project, row.file_id)
            except NotFound:
                raise CodeError(
                    f"The code file {row.file_id} no longer exists; deploy the function again."
                ) from None
            handler.check_zip(data, row.function_path, self.limits)
            zips.extract_atomic(data, code_dir, self.limits)
        requirements = requirements_of(code_dir)
        env = self.envs.get_or_build(
            row.runtime,
            requirements,
            index_url=row.index_url,
            extra_index_urls=row.extra_index_urls,
            requirements_file=code_dir / "requirements.txt" if requirements else None,
            code_digest=f"{row.id}:{row.file_id}",
            function_id=row.id,
        )
        return PreparedFunction(code_dir, env)

    def build_version(self, row: FunctionRow) -> PreparedFunction:
        """Build a function at one of its versions (``store.versions.function_at``) as a
        function is built, its handler imported and kept warm. Raises ``CodeError``."""
        prepared = self._prepare(row, fresh=True)
        self._import_check(row, prepared)
        return prepared

    def ensure_local(self, row: FunctionRow) -> PreparedFunction:
        """The function's code and environment on this machine, made again if missing.

        For the executor: another replica may have built the function, or the code dir
        may have been cleaned. Raises ``CodeError`` when they cannot be made.
        """
        return self._prepare(row, fresh=False)

    def _import_check(self, row: FunctionRow, prepared: PreparedFunction) -> None:
        """Import the handler in its zygote, in its sandbox, as calls will. Raises ``CodeError``."""
        result = self.prepare(
            prepared.env, prepared.code_dir, row.function_path, row.env_vars, limits=self.functions.call_limits(row)
        )
        if not result.ok:
            raise CodeError(result.message, result.trace)
