"""Function versions: new code for a function that keeps its id, schedules, secrets and calls.

    deploy ─▶ version n+1 Queued ─▶ Deploying ─▶ Ready ──▶ current (if newer than current)
                                             └─▶ Failed   (the current one stays; the function
                                                           says why in ``versionError``)
    rollback ─▶ an earlier Ready, kept version becomes current

A new version is built beside the current one, which keeps serving (``VersionBuilder``,
with a lease as the function builder has). Becoming current is one transaction on the
function's row (``store.versions.make_current``): a call is accepted on the version its
function row names when it is accepted, the call row records it, and dispatching runs that
version's code and environment, so a call accepted before a switch finishes on the old
version and one accepted after runs the new one; schedules fire by function, untouched.

Version 1 is the code a function was created with, and is built with the function
(``services/builds.py``). Code identical to the current version's (the zip's sha256) with
the same settings makes no version. Versions past ``versions_kept`` earlier Ready ones are
retired: their code directory goes, and they can no longer be rolled back to.

Crash windows: a version whose builder dies is claimed again when its lease ends. A server
that dies between the switch's commit and telling its executor leaves the old version's
zygote idle; the memory budget evicts it.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fnhost.auth.capabilities import Principal
from fnhost.build.zips import CodeError
from fnhost.clock import now_ms
from fnhost.core.loop import Service
from fnhost.errors import Conflict, InvalidRequest, NotFound
from fnhost.run.abc import Executor
from fnhost.services.access import Access
from fnhost.services.functions import Functions, FunctionSpec
from fnhost.settings import Settings
from fnhost.statuses import FunctionStatus, function_moves
from fnhost.store import files as file_store
from fnhost.store import functions as function_store
from fnhost.store import versions as store
from fnhost.store.db import Database
from fnhost.store.functions import FunctionRow
from fnhost.store.versions import FunctionVersionRow

log = logging.getLogger("fnhost.build")

LEASE_SECONDS = 30
# the settings a version fixes (the function's columns of the same names); the rest of the
# function (name, secrets, schedules, ...) stays as it is
VERSION_SETTINGS = ("function_path", "env_vars", "cpu", "memory", "runtime", "index_url", "extra_index_urls")


@dataclass(frozen=True)
class VersionSpec:
    """New code for a function, and the settings that change with it (None: as the current
    version has it)."""

    file_id: int
    function_path: str | None = None
    env_vars: dict[str, str] | None = None
    cpu: float | None = None
    memory: float | None = None
    runtime: str | None = None
    index_url: str | None = None
    extra_index_urls: builtins.list[str] | None = None


class Builds(Protocol):
    """What versions use of the builder (``services.builds.Builder``)."""

    def build_version(self, row: FunctionRow) -> Any: ...  # .code_dir, .env; raises CodeError

    def ensure_local(self, row: FunctionRow) -> Any: ...

    def code_dir(self, function_id: int, version: int = 1) -> Path: ...


@dataclass(frozen=True)
class Deployed:
    """What a deploy made: a new version, or (``created`` False) the current one, unchanged."""

    version: FunctionVersionRow
    created: bool


class Versions:
    def __init__(
        self,
        *,
        db: Database,
        access: Access,
        functions: Functions,
        settings: Settings,
        builds: Builds,
        executor: Executor,
    ) -> None:
        self.db = db
        self.access = access
        self.functions = functions
        self.settings = settings
        self.builds = builds
        self.executor = executor
        # called after a new version was written, so a builder starts at once
        self.on_deployed: builtins.list[Callable[[int], None]] = []
        # called with (function id, the version that was current, the new current one)
        self.on_switched: builtins.list[Callable[[int, int, int], None]] = []
        # called with (function id, version) when a retired version's code is removed
        self.on_retired: builtins.list[Callable[[int, int], None]] = []

    # -- reads ------------------------------------------------------------------------------
    def list(self, project: str, caller: Principal, function_id: int) -> tuple[FunctionRow, builtins.list[FunctionVersionRow]]:
        """The function and its versions, newest first."""
        self.access.require(caller, project, "functionsAcl", "READ")
        with self.db.read() as s:
            function = self._function(project, function_id, session=s)
            return function, store.of_function(function_id, session=s)

    def get(self, project: str, caller: Principal, function_id: int, number: int) -> tuple[FunctionRow, FunctionVersionRow]:
        self.access.require(caller, project, "functionsAcl", "READ")
        with self.db.read() as s:
            function = self._function(project, function_id, session=s)
            return function, self._version(function_id, number, session=s)

    # -- deploy -----------------------------------------------------------------------------
    def deploy(self, project: str, caller: Principal, function_id: int, spec: VersionSpec) -> Deployed:
        """New code (and settings) for a function: a new version, built in the background;
        settings left out are the current version's. Identical code and settings make none."""
        self.access.require(caller, project, "functionsAcl", "WRITE")
        with self.db.read() as s:
            function = self._function(project, function_id, session=s)
        given = {name: getattr(spec, name) for name in VERSION_SETTINGS}
        kept = {name: getattr(function, name) if value is None else value for name, value in given.items()}
        values = self.functions.validate(FunctionSpec(name=function.name, file_id=spec.file_id, **kept))
        values["runtime_version"] = self.functions.runtimes[values["runtime"]].display_version
        sha = self.functions._check_code(project, values["file_id"], values["function_path"])
        settings = {c: values[c] for c in store.SETTINGS_COLUMNS}
        with self.db.write() as s:
            function = self._function(project, function_id, session=s)
            file = file_store.get(project, values["file_id"], session=s)
            if file is None:
                raise NotFound(
                    f"File {values['file_id']} does not exist in this project.",
                    missing=[{"id": values["file_id"]}],
                    field="file_id",
                )
            if not file.uploaded:
                raise InvalidRequest(f"File {file.name!r} (id {file.id}) has not been uploaded yet.", field="file_id")
            versions = store.of_function(function_id, session=s)
            same = next(
                (
                    v for v in versions
                    if (v.number == function.version or v.status in (FunctionStatus.QUEUED, FunctionStatus.DEPLOYING))
                    and v.retired_time is None
                    and sha is not None
                    and v.code_sha256 == sha
                    and all(getattr(v, c) == settings[c] for c in store.SETTINGS_COLUMNS)
                ),
                None,
            )
            if same is not None:
                return Deployed(same, created=False)
            version = store.add(
                FunctionVersionRow(
                    function_id=function_id,
                    project=project,
                    number=(versions[0].number if versions else 0) + 1,
                    code_sha256=sha,
                    status=FunctionStatus.QUEUED,
                    created_time=now_ms(),
                    created_by=caller.subject[:128],
                    **{c: values[c] for c in store.CODE_COLUMNS},
                ),
                session=s,
            )
        for hook in self.on_deployed:
            hook(version.id)
        return Deployed(version, created=True)

    # -- rollback ---------------------------------------------------------------------------
    def rollback(self, project: str, caller: Principal, function_id: int, to: int | None = None) -> FunctionVersionRow:
        """Make an earlier Ready, kept version current again (the newest such below the
        current one when ``to`` is None). Its handler is warmed here before the switch, so
        the first call after it does not wait for a cold start."""
        self.access.require(caller, project, "functionsAcl", "WRITE")
        if to is not None and (not isinstance(to, int) or isinstance(to, bool) or to < 1):
            raise InvalidRequest("version must be a positive integer.", field="version")
        with self.db.read() as s:
            function = self._function(project, function_id, session=s)
            target = self._rollback_target(function, to, session=s)
            view = store.function_at(function, target)
        prepared = self.builds.ensure_local(view)
        result = self.executor.prepare(
            prepared.env, Path(prepared.code_dir), view.function_path, view.env_vars,
            limits=self.functions.call_limits(view),
        )
        if not result.ok:
            raise Conflict(f"Version {target.number} could not be started again: {result.message}")
        with self.db.write() as s:
            function = self._function(project, function_id, session=s)
            target = self._rollback_target(function, target.number, session=s)
            previous = function.version
            store.make_current(function, target)
        for hook in self.on_switched:
            hook(function_id, previous, target.number)
        return target

    def _rollback_target(self, function: FunctionRow, to: int | None, *, session: Any) -> FunctionVersionRow:
        if to is None:
            earlier = [
                v for v in store.of_function(function.id, session=session)
                if v.number < function.version and v.status == FunctionStatus.READY and v.retired_time is None
            ]
            if not earlier:
                raise Conflict(f"Function {function.id} has no earlier Ready version to roll back to.")
            return earlier[0]
        target = self._version(function.id, to, session=session)
        if target.number == function.version:
            raise Conflict(f"Version {to} is already the current version of function {function.id}.")
        if target.status != FunctionStatus.READY:
            raise Conflict(f"Version {to} is {target.status}: only a Ready version can be rolled back to.")
        if target.retired_time is not None:
            raise Conflict(
                f"Version {to} was retired (only the {self.settings.versions_kept} newest earlier versions are "
                "kept, FNHOST_VERSIONS_KEPT); deploy its code again instead."
            )
        return target

    # -- retention --------------------------------------------------------------------------
    def prune(self, function_id: int) -> builtins.list[int]:
        """Retire the Ready versions beyond ``versions_kept`` earlier ones, and remove the code
        of retired or failed versions that no call runs; the numbers whose code went."""
        removed: builtins.list[int] = []
        with self.db.write() as s:
            function = function_store.get_any(function_id, session=s)
            if function is None:
                return removed
            versions = store.of_function(function_id, session=s)
            kept = 0
            for v in versions:
                if v.number == function.version or v.status != FunctionStatus.READY or v.retired_time is not None:
                    continue
                kept += 1
                if kept > self.settings.versions_kept:
                    v.retired_time = now_ms()
            for v in versions:
                gone = v.retired_time is not None or v.status == FunctionStatus.FAILED
                if gone and v.number != function.version and not store.running_calls(function_id, v.number, session=s):
                    removed.append(v.number)
        for number in removed:
            code_dir = self.builds.code_dir(function_id, number)
            if code_dir.exists():
                for hook in self.on_retired:
                    hook(function_id, number)
                shutil.rmtree(code_dir, ignore_errors=True)
        return removed

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _function(project: str, function_id: int, *, session: Any) -> FunctionRow:
        row = function_store.get(project, function_id, session=session)
        if row is None:
            raise NotFound(f"Function {function_id} does not exist.", missing=[{"id": function_id}])
        return row

    @staticmethod
    def _version(function_id: int, number: int, *, session: Any) -> FunctionVersionRow:
        row = store.get(function_id, number, session=session)
        if row is None:
            raise NotFound(f"Function {function_id} has no version {number}.", field="version")
        return row


class VersionBuilder(Service):
    """Builds new versions (2 and up) beside the current one, and switches to each that
    ends Ready if it is newer than the current one."""

    name = "version-builder"
    interval = 2.0

    def __init__(self, *, db: Database, versions: Versions, builds: Builds, replica_id: str) -> None:
        super().__init__()
        self.db = db
        self.versions = versions
        self.builds = builds
        self.replica_id = replica_id
        self._running: set[asyncio.Task[None]] = set()
        self._event_loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        for task in list(self._running):
            task.cancel()
        for task in list(self._running):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def deployed(self, version_id: int) -> None:
        """A hook for ``Versions.on_deployed`` (called in request threads)."""
        loop = self._event_loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.wake)

    async def run_once(self) -> None:
        while len(self._running) < 2:
            claimed = await asyncio.to_thread(self._claim)
            if claimed is None:
                return
            task = asyncio.create_task(self._build(claimed), name=f"version-build-{claimed}")
            self._running.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not self._stopping:
            self.wake()

    def _claim(self) -> int | None:
        with self.db.write() as s:
            row = store.claim_next_build(self.replica_id, now_ms(), LEASE_SECONDS * 1000, session=s)
            if row is None:
                return None
            if row.status != FunctionStatus.DEPLOYING:
                row.status = function_moves(row.status, FunctionStatus.DEPLOYING)
            return row.id

    def _renew(self, version_id: int) -> None:
        with self.db.write() as s:
            row = store.get_by_id(version_id, session=s)
            if row is not None and row.build_owner == self.replica_id and row.status == FunctionStatus.DEPLOYING:
                row.build_lease_until = now_ms() + LEASE_SECONDS * 1000

    async def _build(self, version_id: int) -> None:
        work = asyncio.create_task(asyncio.to_thread(self.build_one, version_id))
        while True:
            done, _ = await asyncio.wait({work}, timeout=LEASE_SECONDS / 3)
            if done:
                work.result()
                return
            await asyncio.to_thread(self._renew, version_id)

    def build_one(self, version_id: int) -> None:
        with self.db.read() as s:
            version = store.get_by_id(version_id, session=s)
            function = None if version is None else function_store.get_any(version.function_id, session=s)
        if version is None or function is None:
            return
        view = store.function_at(function, version)
        started = now_ms()
        try:
            prepared = self.builds.build_version(view)
        except CodeError as exc:
            self._finish(version_id, FunctionStatus.FAILED, {"message": exc.message, "trace": exc.trace}, None)
            log.info("function %s version %s failed to build: %s", function.id, version.number, exc.message)
            return
        except Exception as exc:
            log.exception("function %s version %s: unexpected build error", function.id, version.number)
            message = f"Function deployment failed: {type(exc).__name__}: {exc}"
            self._finish(version_id, FunctionStatus.FAILED, {"message": message, "trace": traceback.format_exc()}, None)
            return
        self._finish(version_id, FunctionStatus.READY, None, prepared.env.hash)
        log.info("function %s version %s ready in %d ms", function.id, version.number, now_ms() - started)

    def _finish(self, version_id: int, status: FunctionStatus, error: dict[str, Any] | None, env_hash: str | None) -> None:
        switched: tuple[int, int, int] | None = None
        with self.db.write() as s:
            version = store.get_by_id(version_id, session=s)
            if version is None or version.build_owner != self.replica_id or version.status != FunctionStatus.DEPLOYING:
                return  # deleted, or our lease ran out and another builder took over
            function = function_store.get_any(version.function_id, session=s)
            if function is None:
                return
            version.status = function_moves(version.status, status)
            version.error = error
            version.env_hash = env_hash
            version.ready_time = now_ms() if status == FunctionStatus.READY else None
            version.build_owner = None
            version.build_lease_until = None
            newer = version.number > function.version or function.status != FunctionStatus.READY
            if status == FunctionStatus.READY and newer:
                switched = (function.id, function.version, version.number)
                store.make_current(function, version)
            elif status == FunctionStatus.FAILED and version.number > function.version:
                function.version_error = {"version": version.number, **(error or {})}
        if switched is not None:
            for hook in self.versions.on_switched:
                hook(*switched)
            log.info("function %s: version %s is current (was %s)", switched[0], switched[2], switched[1])
        try:
            self.versions.prune(version.function_id)
        except Exception:  # retention is tidying: the build's outcome is recorded already
            log.exception("function %s: removing retired versions failed", version.function_id)
