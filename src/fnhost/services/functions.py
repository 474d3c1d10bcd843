"""Functions: validation of what a user deploys, the status machine, limits.

Status: Queued → Deploying → Ready | Failed. The builder (``build/builder.py``) moves a
function along; this module owns the rules and what the API sees.
"""

from __future__ import annotations

import builtins
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from pydantic.alias_generators import to_camel

from fnhost.auth.capabilities import Principal
from fnhost.auth.crypto import SecretBox
from fnhost.build.runtimes import KNOWN as KNOWN_RUNTIMES
from fnhost.build.runtimes import Runtime
from fnhost.clock import now_ms
from fnhost.errors import Duplicated, InvalidRequest, LimitExceeded, NotFound
from fnhost.run.abc import CallLimits
from fnhost.services.access import Access
from fnhost.services.identifiers import Identifier, id_entry, resolve_all
from fnhost.settings import Settings
from fnhost.store import files as file_store
from fnhost.store import functions as store
from fnhost.store import versions as version_store
from fnhost.store.db import Database
from fnhost.store.functions import FunctionRow

STATUSES = ("Queued", "Deploying", "Ready", "Failed")
SECRET_KEY = re.compile(r"^[a-z0-9-]{1,15}$")
ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_ENV_PREFIXES = ("FNHOST_", "COGNITE_FUNCTION_")
MAX_SECRETS = 30
MAX_SECRETS_BYTES = 4096
MAX_ENV_VARS = 100
MAX_ENV_BYTES = 4096
MAX_METADATA = 16
MAX_METADATA_KEY = 32
MAX_METADATA_VALUE = 512


@dataclass(frozen=True)
class FunctionSpec:
    """What a user asks to deploy (the API's FunctionWrite), checked by ``validate``."""

    name: str
    file_id: int
    external_id: str | None = None
    description: str | None = None
    owner: str | None = None
    function_path: str | None = None  # handler.py when not given
    secrets: dict[str, str] | None = None
    env_vars: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    cpu: float | None = None  # the settings' defaults when not given
    memory: float | None = None
    runtime: str | None = None
    index_url: str | None = None
    extra_index_urls: builtins.list[str] | None = None


@dataclass(frozen=True)
class FunctionFilter:
    """``functions/list``: every given condition must hold."""

    name: str | None = None
    owner: str | None = None
    file_id: int | None = None
    status: str | None = None
    external_id_prefix: str | None = None
    created_min: int | None = None
    created_max: int | None = None
    metadata: dict[str, str] | None = None


@dataclass(frozen=True)
class FunctionLimits:
    timeout_minutes: int
    cpu: tuple[float, float, float]  # min, max, default
    memory_gb: tuple[float, float, float]
    runtimes: builtins.list[str]
    response_size_mb: float


def _string(value: str | None, field: str, maximum: int, *, required: bool = False) -> str | None:
    """``field`` is the domain's name; the message says the API's (``external_id`` →
    ``externalId``), as every message does."""
    if value is None and not required:
        return None
    if value is None or (required and not value) or len(value) > maximum:
        raise InvalidRequest(
            f"{to_camel(field)} must be a string of {'1' if required else '0'} to {maximum} characters.",
            field=field,
        )
    return value


def _url(value: str, field: str) -> str:
    if len(value) > 2048:
        raise InvalidRequest(f"{to_camel(field)} must be a URL of at most 2048 characters.", field=field)
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidRequest(f"{to_camel(field)} must be an http(s) URL, got {value!r}.", field=field)
    return value


class Functions:
    def __init__(
        self,
        db: Database,
        access: Access,
        secret_box: SecretBox,
        settings: Settings,
        runtimes: dict[str, Runtime],
        code_reader: Callable[[str, int], bytes] | None = None,
    ) -> None:
        self.db = db
        # (project, file_id) -> the zip's bytes, so create can refuse bad code at once
        self.code_reader = code_reader
        self.access = access
        self.box = secret_box
        self.settings = settings
        self.runtimes = runtimes
        # called with (project, function_id) after a function is deleted (schedules, executor…)
        self.on_deleted: builtins.list[Callable[[str, int], None]] = []
        # called after a function is created, so the builder starts at once
        self.on_created: builtins.list[Callable[[int], None]] = []

    # -- limits ----------------------------------------------------------------------------
    def limits(self) -> FunctionLimits:
        s = self.settings
        return FunctionLimits(
            timeout_minutes=max(1, s.call_timeout_seconds // 60),
            cpu=(s.call_cpu_min, s.call_cpu_max, s.call_cpu_default),
            memory_gb=(s.call_memory_min_gb, s.call_memory_max_gb, s.call_memory_default_gb),
            runtimes=sorted(self.runtimes),
            response_size_mb=s.response_max_bytes / (1024 * 1024),
        )

    # -- create ----------------------------------------------------------------------------
    def validate(self, spec: FunctionSpec) -> dict[str, Any]:
        """Check what a user asks to deploy; return the cleaned values (the row's columns).
        Raises with a precise message naming the field."""
        s = self.settings
        out: dict[str, Any] = {
            "name": _string(spec.name, "name", 140, required=True),
            "external_id": _string(spec.external_id, "external_id", 255),
            "description": _string(spec.description, "description", 500),
            "owner": _string(spec.owner, "owner", 128),
            "file_id": spec.file_id,
        }

        path = spec.function_path or "handler.py"
        if len(path) > 500:
            raise InvalidRequest(
                "The function path must be a string of at most 500 characters.",
                field="function_path",
            )
        path = path.replace("\\", "/")
        parts = path.split("/")
        if not path.endswith(".py") or path.startswith("/") or ".." in parts or "" in parts:
            raise InvalidRequest(
                f"The function path must be a relative path to a .py file inside the zip, got {path!r}.",
                field="function_path",
            )
        out["function_path"] = path

        secrets = spec.secrets
        if secrets is not None:
            if len(secrets) > MAX_SECRETS:
                raise InvalidRequest(f"At most {MAX_SECRETS} secrets; got {len(secrets)}.", field="secrets")
            bad = [k for k in secrets if not SECRET_KEY.match(k)]
            if bad:
                raise InvalidRequest(
                    f"Invalid secret key(s) {bad}: use lowercase letters, digits and dashes, "
                    "at most 15 characters.",
                    field="secrets",
                )
            if sum(len(k) + len(v) for k, v in secrets.items()) > MAX_SECRETS_BYTES:
                raise InvalidRequest(
                    f"Secrets may hold at most {MAX_SECRETS_BYTES} bytes in total.", field="secrets"
                )
        out["secrets"] = secrets or None

        env_vars = spec.env_vars
        if env_vars is not None:
            if len(env_vars) > MAX_ENV_VARS:
                raise InvalidRequest(
                    f"At most {MAX_ENV_VARS} environment variables; got {len(env_vars)}.",
                    field="env_vars",
                )
            bad = [k for k in env_vars if not ENV_KEY.match(k)]
            if bad:
                raise InvalidRequest(
                    f"Invalid environment variable name(s) {bad}: use letters, digits and "
                    "underscores, not starting with a digit.",
                    field="env_vars",
                )
            reserved = [k for k in env_vars if k.upper().startswith(RESERVED_ENV_PREFIXES)]
            if reserved:
                raise InvalidRequest(
                    f"Environment variable(s) {reserved} use a reserved prefix "
                    f"{RESERVED_ENV_PREFIXES}.",
                    field="env_vars",
                )
            if sum(len(k) + len(v) for k, v in env_vars.items()) > MAX_ENV_BYTES:
                raise InvalidRequest(
                    f"Environment variables may hold at most {MAX_ENV_BYTES} bytes in total.",
                    field="env_vars",
                )
        out["env_vars"] = env_vars or None

        metadata = spec.metadata
        if metadata is not None:
            if len(metadata) > MAX_METADATA:
                raise InvalidRequest(f"metadata may have at most {MAX_METADATA} keys.", field="metadata")
            for k, v in metadata.items():
                if len(k) > MAX_METADATA_KEY or len(v) > MAX_METADATA_VALUE:
                    raise InvalidRequest(
                        f"metadata keys are at most {MAX_METADATA_KEY} characters and values at most "
                        f"{MAX_METADATA_VALUE}; {k!r} is over.",
                        field="metadata",
                    )
        out["metadata"] = metadata or None

        out["cpu"] = self._bounded(spec.cpu, "cpu", s.call_cpu_min, s.call_cpu_max, s.call_cpu_default)
        out["memory"] = self._bounded(
            spec.memory, "memory", s.call_memory_min_gb, s.call_memory_max_gb, s.call_memory_default_gb
        )

        runtime = spec.runtime or s.default_runtime
        if runtime not in self.runtimes:
            known = "known but not installed on this server" if runtime in KNOWN_RUNTIMES else "unknown"
            raise InvalidRequest(
                f"Runtime {runtime!r} is {known}. Available runtimes: {', '.join(sorted(self.runtimes))}.",
                field="runtime",
            )
        out["runtime"] = runtime

        index_url = spec.index_url
        out["index_url"] = _url(index_url, "index_url") if index_url is not None else None
        extra = spec.extra_index_urls
        if extra is not None:
            if len(extra) > 10:
                raise InvalidRequest(
                    "extraIndexUrls must be a list of at most 10 URLs.", field="extra_index_urls"
                )
            extra = [_url(u, "extra_index_urls") for u in extra]
        out["extra_index_urls"] = extra or None
        return out

    @staticmethod
    def _bounded(value: float | None, key: str, lo: float, hi: float, default: float) -> float:
        if value is None:
            return default
        if not lo <= value <= hi:
            raise InvalidRequest(f"{key} must be between {lo} and {hi}; got {value}.", field=key)
        return float(value)

    def create(self, project: str, caller: Principal, spec: FunctionSpec) -> FunctionRow:
        self.access.require(caller, project, "functionsAcl", "WRITE")
        values = self.validate(spec)
        runtime = self.runtimes[values["runtime"]]
        secrets = values.pop("secrets")
        code_sha256 = self._check_code(project, values["file_id"], values["function_path"])
        with self.db.write() as s:
            if store.count(project, session=s) >= self.settings.max_functions_per_project:
                raise LimitExceeded(
                    f"Project {project!r} already has {self.settings.max_functions_per_project} "
                    "functions, the most allowed. Delete one first."
                )
            xid = values["external_id"]
            if xid is not None and store.by_external_id(project, xid, session=s) is not None:
                raise Duplicated(
                    f"A function with the external id {xid!r} already exists.",
                    duplicated=[Identifier(external_id=xid).entry()],
                    field="external_id",
                )
            file = file_store.get(project, values["file_id"], session=s)
            if file is None:
                raise NotFound(
                    f"File {values['file_id']} does not exist in this project.",
                    missing=[id_entry(values["file_id"])],
                    field="file_id",
                )
            if not file.uploaded:
                raise InvalidRequest(
                    f"File {file.name!r} (id {file.id}) has not been uploaded yet.", field="file_id"
                )
            row = store.add(
                FunctionRow(
                    project=project,
                    **{k: v for k, v in values.items() if k != "metadata"},
                    metadata_=values["metadata"],
                    secrets_encrypted=self.box.encrypt_json(secrets) if secrets else None,
                    secret_names=sorted(secrets) if secrets else None,
                    runtime_version=runtime.display_version,
                    status="Queued",
                    created_time=now_ms(),
                ),
                session=s,
            )
            version_store.add(version_store.first_of(row, code_sha256, caller.subject[:128]), session=s)
        for hook in self.on_created:
            hook(row.id)
        return row

    def _check_code(self, project: str, file_id: int, function_path: str) -> str | None:
        """Refuse at create time what the zip alone shows is wrong (not a zip, no handle…);
        the zip's sha256 (None when it cannot be read here)."""
        from fnhost.build import handler, zips

        if self.code_reader is None:
            return None
        with self.db.read() as s:
            file = file_store.get(project, file_id, session=s)
        if file is None or not file.uploaded:
            return None  # the checks in create() say so precisely
        cfg = self.settings
        data = self.code_reader(project, file_id)
        try:
            handler.check_zip(
                data,
                function_path,
                zips.ZipLimits(cfg.max_zip_entries, cfg.max_code_bytes, cfg.max_zip_ratio),
            )
        except zips.CodeError as exc:
            # the file's name, which the person chose, rather than its id
            raise InvalidRequest(f"In {file.name!r}: {exc.message}", field="file_id") from None
        return hashlib.sha256(data).hexdigest()

    # -- read ------------------------------------------------------------------------------
    def resolve(self, project: str, ident: Identifier, *, session: Any) -> FunctionRow | None:
        if ident.id is not None:
            return store.get(project, ident.id, session=session)
        return store.by_external_id(project, ident.external_id or "", session=session)

    def _resolve_all(
        self, project: str, idents: builtins.list[Identifier], ignore_unknown: bool, *, session: Any
    ) -> builtins.list[FunctionRow]:
        rows = [self.resolve(project, i, session=session) for i in idents]
        return resolve_all(
            idents,
            rows,
            what="Functions",
            ignore_unknown=ignore_unknown,
            entry=lambda i: i.entry(snake_case=True),  # as the live API (wire gotcha 4)
        )

    def by_ids(
        self, project: str, caller: Principal, idents: builtins.list[Identifier], ignore_unknown: bool
    ) -> builtins.list[FunctionRow]:
        self.access.require(caller, project, "functionsAcl", "READ")
        with self.db.read() as s:
            return self._resolve_all(project, idents, ignore_unknown, session=s)

    def get(self, project: str, caller: Principal, function_id: int, *, acl_action: str = "READ") -> FunctionRow:
        self.access.require(caller, project, "functionsAcl", acl_action)
        with self.db.read() as s:
            row = store.get(project, function_id, session=s)
        if row is None:
            raise NotFound(f"Function {function_id} does not exist.", missing=[{"id": function_id}])
        return row

    def list(
        self, project: str, caller: Principal, *, limit: int, filt: FunctionFilter | None = None
    ) -> builtins.list[FunctionRow]:
        self.access.require(caller, project, "functionsAcl", "READ")
        filt = filt or FunctionFilter()
        if filt.status is not None and filt.status not in STATUSES:
            raise InvalidRequest(
                f"Unknown status {filt.status!r}; one of {', '.join(STATUSES)}.", field="status"
            )
        metadata = filt.metadata
        with self.db.read() as s:
            rows = store.list_filtered(
                project,
                session=s,
                limit=10_000 if metadata else limit,
                name=filt.name,
                owner=filt.owner,
                file_id=filt.file_id,
                status=filt.status,
                external_id_prefix=filt.external_id_prefix,
                created_min=filt.created_min,
                created_max=filt.created_max,
            )
        if metadata:
            rows = [r for r in rows if all((r.metadata_ or {}).get(k) == v for k, v in metadata.items())]
        return rows[:limit]

    # -- delete ----------------------------------------------------------------------------
    def delete(
        self, project: str, caller: Principal, idents: builtins.list[Identifier], ignore_unknown: bool
    ) -> builtins.list[int]:
        from fnhost.store import calls as call_store

        self.access.require(caller, project, "functionsAcl", "WRITE")
        with self.db.write() as s:
            rows = self._resolve_all(project, idents, ignore_unknown, session=s)
            ids = sorted(r.id for r in rows)
            for fid in ids:
                call_store.delete_for_function(fid, session=s)
                row = store.get(project, fid, session=s)
                if row is not None:
                    s.delete(row)
        for fid in ids:
            for hook in self.on_deleted:
                hook(project, fid)
        return ids

    # -- for the builder and executor --------------------------------------------------------
    def call_limits(self, row: FunctionRow) -> CallLimits:
        """What each call of the function may use (its row's memory and CPU, the server's
        settings for the rest)."""
        s = self.settings
        return CallLimits(
            timeout_s=float(s.call_timeout_seconds),
            memory_bytes=int(row.memory * 1024**3),
            cpu=row.cpu,
            max_processes=s.call_max_processes,
            max_file_bytes=s.call_max_file_bytes,
            max_open_files=s.call_max_open_files,
            response_max_bytes=s.response_max_bytes,
            log_max_bytes=s.log_max_bytes,
            cpu_time_s=s.call_cpu_seconds,
        )

    def secrets_of(self, row: FunctionRow) -> dict[str, str]:
        if not row.secrets_encrypted:
            return {}
        value = self.box.decrypt_json(row.secrets_encrypted)
        return dict(value) if isinstance(value, dict) else {}
