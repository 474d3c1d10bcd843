"""The running system's parts, wired once from settings. No HTTP here.

``create_app`` builds one ``System`` and hands it to the routes; tests and the CLI can
build one without a server.
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

from fnhost.auth import passwords
from fnhost.auth.crypto import SecretBox
from fnhost.auth.keys import SigningKey
from fnhost.auth.oidc import ExternalIssuers
from fnhost.auth.tokens import TokenService
from fnhost.blobs.abc import BlobStore
from fnhost.blobs.database import DatabaseBlobStore
from fnhost.blobs.local import LocalBlobStore
from fnhost.clock import now_ms
from fnhost.core.loop import Service
from fnhost.metrics import Metrics
from fnhost.run.abc import Executor
from fnhost.run.network import Egress, policy_of
from fnhost.run.sandbox import HostIsolation, Isolation
from fnhost.settings import Settings
from fnhost.store import clients as client_store
from fnhost.store import projects as project_store
from fnhost.store.clients import ClientRow
from fnhost.store.db import Database

log = logging.getLogger("fnhost")


class System:
    def __init__(self, settings: Settings) -> None:
        from fnhost.build import runtimes
        from fnhost.services.access import Access
        from fnhost.services.assets import Assets
        from fnhost.services.files import Files
        from fnhost.services.functions import Functions
        from fnhost.services.groups import Groups
        from fnhost.services.raw import Raw
        from fnhost.services.sessions import Sessions

        self.settings = settings
        self._runtime_dir: Path | None = None
        settings.home.mkdir(parents=True, exist_ok=True)
        self.home = settings.home.resolve()
        self.replica_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
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
        from fnhost.core.ratelimit import RateLimiter

        self.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
        self.access = Access(
            self.db, self.tokens, settings.token_lifetime_seconds, external=self.external_issuers
        )
        self.sessions = Sessions(
            self.db,
            self.access,
            settings.nonce_lifetime_seconds,
            max_chain_depth=settings.session_max_chain_depth,
        )
        self.files = Files(self.db, self.blobs, self.access, settings)
        self.groups = Groups(self.db, self.access)
        self.assets = Assets(self.db, self.access)
        self.raw = Raw(self.db, self.access)
        self.runtimes = runtimes.discover()
        self.functions = Functions(
            self.db, self.access, self.secret_box, settings, self.runtimes, code_reader=self.files.content
        )
        self.metrics = Metrics()
        # background loops (builder, executor supervisor, scheduler), started in order
        self.background: list[Service] = []
        from fnhost.build.builder import Builder
        from fnhost.build.envs import BuildSandbox

        # one detection of what this host can isolate, shared by calls and builds
        self.egress = Egress()
        self.isolation = HostIsolation(
            settings.isolation,
            uid_base=settings.isolation_uid_base,
            uid_count=settings.isolation_uid_count,
            hidden=self.private_paths(),
            policy=policy_of(settings.network, settings.network_allow),
            api_port=settings.sandbox_api_port(),
        )
        self.builder = Builder(
            sandbox=BuildSandbox(self.isolation, self.egress, policy_of(settings.network, settings.network_allow)),
            db=self.db,
            files=self.files,
            functions=self.functions,
            settings=settings,
            runtimes=self.runtimes,
            home=self.home,
            replica_id=self.replica_id,
            metrics=self.metrics,
        )
        self.background.append(self.builder)
        # calls: the executor runs them, the calls service queues and records them
        from fnhost.services.calls import Calls, CallsService

        self.executor = make_executor(
            settings,
            hidden_paths=self.private_paths(),
            api_socket=str(self.api_socket_path),
            isolation=self.isolation,
            egress=self.egress,
        )
        self.builder.executor = self.executor
        self.calls = Calls(
            db=self.db,
            access=self.access,
            sessions=self.sessions,
            functions=self.functions,
            executor=self.executor,
            settings=settings,
            replica_id=self.replica_id,
            public_url=self.public_url,
            builder=self.builder,
            metrics=self.metrics,
        )
        self.background.insert(0, CallsService(self.calls, self.executor))
        # schedules and the scheduler; keep last, so the scheduler starts after what it fires into
        from fnhost.schedule import wire_schedules

        self.schedules, self.scheduler = wire_schedules(self)

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
        if getattr(getattr(self.executor, "isolation", None), "mechanism", None) == "uid":
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
        """Make a service client; the secret is shown once and stored only as a hash.

        As in CDF, what it may do comes from the groups it is in: an admin joins the
        project's admin group, a client with ``capabilities`` the group of exactly those.
        """
        from fnhost.auth.capabilities import ALL_CAPABILITIES
        from fnhost.services import groups

        project = project or self.settings.default_project
        client_id = f"{name}-{secrets.token_hex(4)}"
        secret = passwords.new_secret()
        with self.db.write() as s:
            project_store.ensure(project, session=s)
            client_store.add(
                ClientRow(
                    client_id=client_id,
                    name=name,
                    secret_hash=passwords.hash_secret(secret),
                    is_admin=admin,
                    created_time=now_ms(),
                ),
                session=s,
            )
            if admin:
                groups.join(project, groups.ADMIN_GROUP, ALL_CAPABILITIES, client_id, session=s)
            if capabilities:
                group = groups.capability_group_name(capabilities)
                groups.join(project, group, capabilities, client_id, session=s)
        return {
            "client_id": client_id,
            "client_secret": secret,
            "token_url": f"{self.public_url}/oauth2/token",
            "base_url": self.public_url,
            "project": project,
            "scopes": [f"{self.public_url}/.default"],
        }

    def ensure_first_admin(self) -> dict[str, Any] | None:
        """On first start, create an admin client and save its credentials (mode 0600)."""
        path = self.home / "admin-client.json"
        with self.db.read() as s:
            if client_store.list_all(session=s):
                return None
        creds = self.create_client("admin", admin=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(creds, out, indent=2)
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
        from fnhost.run.ray import NodeSettings, RayExecutor

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
    from fnhost.run.local import LocalExecutor

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
