"""The composition root: the only module that imports every layer and wires them.

Settings in, a ``System`` out, in order: infrastructure (database, blobs, keys, the host's
isolation, the executor), then the domain services, each handed the narrow parts it uses,
then the hooks between them, all in one place (``_wire``), then the background loops in
the order they start. ``fnhost serve`` hands a System to ``api.app.create_app``; operator
commands and tests build one without a server.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fnhost.auth.crypto import SecretBox
from fnhost.auth.keys import SigningKey
from fnhost.auth.oidc import ExternalIssuers
from fnhost.auth.tokens import TokenService
from fnhost.blobs.abc import BlobStore
from fnhost.blobs.database import DatabaseBlobStore
from fnhost.blobs.local import LocalBlobStore
from fnhost.build import runtimes
from fnhost.build.envs import BuildSandbox
from fnhost.core.loop import Service
from fnhost.core.ratelimit import RateLimiter
from fnhost.metrics import Metrics
from fnhost.run.abc import Executor
from fnhost.run.local import LocalExecutor
from fnhost.run.network import Egress, policy_of
from fnhost.run.sandbox import HostIsolation, Isolation
from fnhost.services.access import Access
from fnhost.services.assets import Assets
from fnhost.services.builds import Builder
from fnhost.services.calls import Calls, CallsService
from fnhost.services.clients import Clients, Credentials
from fnhost.services.files import Files
from fnhost.services.functions import Functions
from fnhost.services.groups import Groups
from fnhost.services.overview import Overview
from fnhost.services.raw import Raw
from fnhost.services.scheduler import Scheduler
from fnhost.services.schedules import Schedules
from fnhost.services.sessions import Sessions
from fnhost.services.versions import VersionBuilder, Versions
from fnhost.settings import Settings
from fnhost.store import projects as project_store
from fnhost.store.db import Database

log = logging.getLogger("fnhost")


class System:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runtime_dir: Path | None = None
        settings.home.mkdir(parents=True, exist_ok=True)
        self.home = settings.home.resolve()
        self.replica_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"

        # -- infrastructure --------------------------------------------------------------------
        self.db = Database(settings.resolved_database_url())
        self.blobs: BlobStore
        if settings.blob_store == "database":
            self.blobs = DatabaseBlobStore(self.db, settings.database_blob_max_bytes)
        else:
            self.blobs = LocalBlobStore(self.home / "blobs")
        self.tokens = TokenService(
            SigningKey.load_or_create(self.home),
            issuer=settings.resolved_public_url(),
            audience=settings.token_audience,
        )
        self.secret_box = SecretBox.from_settings(settings.secret_key, self.home)
        self.external_issuers = ExternalIssuers(
            settings.oidc_issuers,
            ttl_seconds=settings.oidc_jwks_cache_seconds,
            min_refetch_seconds=settings.oidc_jwks_min_refetch_seconds,
            leeway_seconds=settings.oidc_leeway_seconds,
        )
        self.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
        self.metrics = Metrics()
        self.runtimes = runtimes.discover()
        network = policy_of(settings.network, settings.network_allow)
        # one detection of what this host can isolate, shared by calls and builds
        self.egress = Egress()
        self.isolation = HostIsolation(
            settings.isolation,
            uid_base=settings.isolation_uid_base,
            uid_count=settings.isolation_uid_count,
            hidden=self.private_paths(),
            policy=network,
            api_port=settings.sandbox_api_port(),
        )
        self.executor = make_executor(
            settings,
            hidden_paths=self.private_paths(),
            api_socket=str(self.api_socket_path),
            isolation=self.isolation,
            egress=self.egress,
        )

        # -- the domain ------------------------------------------------------------------------
        self.access = Access(self.db, self.tokens, settings.token_lifetime_seconds, external=self.external_issuers)
        self.sessions = Sessions(
            self.db, self.access, settings.nonce_lifetime_seconds, max_chain_depth=settings.session_max_chain_depth
        )
        self.clients = Clients(self.db, self.public_url, settings.default_project)
        self.files = Files(self.db, self.blobs, self.access, settings)
        self.groups = Groups(self.db, self.access)
        self.assets = Assets(self.db, self.access)
        self.raw = Raw(self.db, self.access)
        self.overview = Overview(self.db, self.access)
        self.functions = Functions(
            self.db, self.access, self.secret_box, settings, self.runtimes, code_reader=self.files.content
        )
        self.builder = Builder(
            db=self.db,
            files=self.files,
            functions=self.functions,
            settings=settings,
            runtimes=self.runtimes,
            home=self.home,
            replica_id=self.replica_id,
            prepare=self.executor.prepare,
            metrics=self.metrics,
            sandbox=BuildSandbox(self.isolation, self.egress, network),
        )
        self.calls = Calls(
            db=self.db,
            access=self.access,
            sessions=self.sessions,
            functions=self.functions,
            executor=self.executor,
            settings=settings,
            replica_id=self.replica_id,
            public_url=self.public_url,
            code=self.builder,
            metrics=self.metrics,
        )
        self.versions = Versions(
            db=self.db,
            access=self.access,
            functions=self.functions,
            settings=settings,
            builds=self.builder,
            executor=self.executor,
        )
        self.version_builder = VersionBuilder(
            db=self.db, versions=self.versions, builds=self.builder, replica_id=self.replica_id
        )
        self.schedules = Schedules(self.db, self.access, self.sessions, settings)
        self.scheduler = (
            Scheduler(
                db=self.db,
                settings=settings,
                replica_id=self.replica_id,
                access=self.access,
                sessions=self.sessions,
                schedules=self.schedules,
                calls=self.calls,
                metrics=self.metrics,
            )
            if settings.scheduler_enabled
            else None
        )
        # background loops, started in this order and stopped in reverse: the executor and
        # calls first, the scheduler last (it fires into both)
        self.background: list[Service] = [
            CallsService(self.calls, self.executor), self.builder, self.version_builder
        ]
        if self.scheduler is not None:
            self.background.append(self.scheduler)
        self._wire()

    def _wire(self) -> None:
        """Who hears of what, in one place. Hooks run in the thread that made the change."""
        self.functions.on_created.append(self.builder.function_created)
        # a deleted function: its code goes, its waiting and running calls fail, its schedules go
        self.functions.on_deleted.append(self.builder.function_deleted)
        self.functions.on_deleted.append(self.calls.function_deleted)
        self.functions.on_deleted.append(self.schedules.delete_for_function)
        if self.scheduler is not None:
            self.schedules.on_changed.append(self.scheduler.poke)
        # a new version: built at once; once current, the previous one's warm process goes
        # after its calls; a retired one's code goes
        self.versions.on_deployed.append(self.version_builder.deployed)
        self.versions.on_switched.append(self.calls.version_switched)
        self.versions.on_retired.append(self.calls.version_retired)

    @property
    def api_socket_path(self) -> Path:
        """Where ``fnhost serve`` also serves the API on a Unix socket: sandboxes have no
        route to the host's network, so this socket is bound into them (run/network.py).
        Short (a socket path must fit in 108 bytes) and private to this process."""
        if self._runtime_dir is None:
            self._runtime_dir = Path(tempfile.mkdtemp(prefix="fnhost-"))
        return self._runtime_dir / "api.sock"

    def private_paths(self) -> list[str]:
        """What no function may see: the data dir, every environment but its own, caches."""
        s = self.settings
        paths = [self.home, s.resolved_env_dir()]
        if s.uv_cache_dir is not None:
            paths.append(s.uv_cache_dir.resolve())
        db_file = s.sqlite_file()
        if db_file is not None:
            paths.append(db_file.parent)
        return [str(p) for p in paths]

    def protect_files(self) -> None:
        """Modes that keep the server's files from other users (functions run as such)."""
        home = self.home
        (home / "code").mkdir(exist_ok=True)
        for path, mode in (
            (home / "blobs", 0o700),
            (home / "keys", 0o700),
            (home / "code", 0o711),  # a function's uid may enter its own dir, not list others
        ):
            if path.is_dir():
                path.chmod(mode)
        db = self.settings.sqlite_file()
        if db is not None:
            for f in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
                if f.exists():
                    f.chmod(0o600)

    async def start(self) -> None:
        self.protect_files()
        for service in self.background:
            await service.start()
        if isinstance(self.executor, LocalExecutor) and self.executor.isolation.mechanism == "uid":
            # functions run as their own uids and reach their code by path: they may pass
            # through the data dir (not list it; its files are closed to them)
            self.home.chmod(self.home.stat().st_mode | 0o001)

    async def stop(self) -> None:
        for service in reversed(self.background):
            await service.stop()
        self.egress.close()

    @property
    def public_url(self) -> str:
        return self.settings.resolved_public_url()

    def migrate(self) -> None:
        self.db.migrate(default_project=self.settings.default_project)
        with self.db.write() as s:
            project_store.ensure(self.settings.default_project, session=s)

    def create_client(
        self,
        name: str,
        *,
        admin: bool,
        project: str | None = None,
        capabilities: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A new service client's credentials (see ``services/clients.py``)."""
        return self.clients.create(name, admin=admin, project=project, capabilities=capabilities).as_dict()

    def ensure_first_admin(self) -> Credentials | None:
        """On first start, create an admin client and save its credentials (mode 0600)."""
        if self.clients.any_exist():
            return None
        creds = self.clients.create("admin", admin=True)
        fd = os.open(self.home / "admin-client.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(creds.as_dict(), out, indent=2)
        return creds

    def write_server_info(self) -> None:
        (self.home / "server.json").write_text(json.dumps({"base_url": self.public_url, "pid": os.getpid()}))

    def close(self) -> None:
        self.db.dispose()
        if self._runtime_dir is not None:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            self._runtime_dir = None


def make_executor(
    settings: Settings,
    hidden_paths: list[str] | None = None,
    api_socket: str | None = None,
    isolation: Callable[[], Isolation] | None = None,
    egress: Egress | None = None,
) -> Executor:
    """The executor ``FNHOST_EXECUTOR`` names; Ray is imported only when chosen."""
    budget = settings.zygote_memory_budget_mb * 1024 * 1024
    if settings.executor == "ray":
        from fnhost.run.ray import NodeSettings, RayExecutor  # the ray extra may be absent

        return RayExecutor(
            settings.ray_address,
            memory_budget_bytes=budget,
            start_timeout_s=settings.ray_start_timeout_seconds,
            node=NodeSettings(
                isolation=settings.isolation,
                uid_base=settings.isolation_uid_base,
                uid_count=settings.isolation_uid_count,
                network=settings.network,
                network_allow=tuple(settings.network_allow),
                api_url=settings.resolved_public_url(),
                env_dir=str(settings.resolved_env_dir()),
                api_port=settings.sandbox_api_port(),
                hidden_paths=tuple(hidden_paths or ()),
                allow_unisolated=settings.ray_allow_unisolated,
            ),
        )
    return LocalExecutor(
        memory_budget_bytes=budget,
        isolation=isolation or settings.isolation,
        isolation_uid_base=settings.isolation_uid_base,
        isolation_uid_count=settings.isolation_uid_count,
        hidden_paths=hidden_paths or [],
        network=policy_of(settings.network, settings.network_allow),
        api_socket=api_socket,
        api_port=settings.sandbox_api_port(),
        egress=egress,
        code_root=str(settings.home.resolve() / "code"),
        env_root=str(settings.resolved_env_dir()),
    )


def read_server_info(home: Path) -> dict[str, Any] | None:
    try:
        return json.loads((home / "server.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
