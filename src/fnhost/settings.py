"""Settings: one typed tree, read from the environment with the ``FNHOST_`` prefix.

Nothing reads settings at import time: ``Settings()`` is built by the CLI (or a test) and
passed into ``create_app(settings)``. Every field is described, because ``docs/configuration.md``
is generated from these descriptions and a test fails when a field is undocumented.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict

# the loopback port a sandbox reaches the API on when the public URL's own cannot be used
SANDBOX_API_PORT_DEFAULT = 8000


class OidcIssuer(BaseModel):
    """One external OpenID Connect issuer whose bearer tokens this server accepts."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    issuer: str = Field(description="Exact `iss` claim of the issuer's tokens.")
    audience: str | list[str] = Field(description="Accepted `aud` value(s).")
    jwks_uri: str | None = Field(
        default=None,
        description="URL of the issuer's JWKS; when unset, read from its OIDC discovery document.",
    )
    groups_claim: str = Field(
        default="groups",
        description="Claim holding the principal's IdP groups (dotted path, e.g. `realm_access.roles`).",
    )
    subject_claim: str = Field(default="sub", description="Claim naming the principal.")
    algorithms: list[str] = Field(
        default=["RS256"], description="Signature algorithms accepted (asymmetric only)."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FNHOST_", extra="ignore")

    home: Path = Field(
        default=Path(".fnhost"),
        description="Data directory: SQLite database, blobs, keys, function code and environments.",
    )
    host: str = Field(default="127.0.0.1", description="Address `fnhost serve` listens on.")
    port: int = Field(default=8000, description="Port `fnhost serve` listens on.")
    public_url: str | None = Field(
        default=None,
        description=(
            "Base URL clients (and function code) use to reach this server. Defaults to "
            "`http://{host}:{port}`. Also the issuer of the tokens the built-in identity "
            "provider signs."
        ),
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the database. Defaults to SQLite at `{home}/fnhost.db`; use "
            "`postgresql+psycopg://…` to share state between replicas."
        ),
    )
    default_project: str = Field(
        default="default",
        description="Project created on first start and used by `fnhost admin create-client`.",
    )
    dev_mode: bool = Field(
        default=False,
        description="Allow placeholder secrets and relaxed checks meant for local development only.",
    )
    secret_key: str | None = Field(
        default=None,
        description=(
            "Key that encrypts secrets at rest (a Fernet key, base64). When unset, one is "
            "generated into `{home}/keys/secrets.key` on first start."
        ),
    )
    token_audience: str = Field(
        default="fnhost", description="Audience (`aud`) of tokens the built-in identity provider signs."
    )
    token_lifetime_seconds: int = Field(
        default=3600, ge=60, description="Lifetime of access tokens from the built-in token endpoint."
    )
    nonce_lifetime_seconds: int = Field(
        default=60, ge=5, description="How long a session nonce may wait before it is bound."
    )
    session_max_chain_depth: int = Field(
        default=3,
        ge=0,
        description=(
            "How deep function-calls-function may chain: a call made from inside a call is one "
            "level; a session past this depth is refused."
        ),
    )
    oidc_issuers: list[OidcIssuer] = Field(
        default=[],
        description=(
            "External OIDC issuers whose tokens are accepted, as JSON: "
            '`[{"issuer", "audience", "jwksUri"?, "groupsClaim"?, "subjectClaim"?, "algorithms"?}]`. '
            "See docs/security.md."
        ),
    )
    oidc_jwks_cache_seconds: int = Field(
        default=3600, ge=0, description="How long an external issuer's JWKS is cached."
    )
    oidc_jwks_min_refetch_seconds: float = Field(
        default=10.0,
        ge=0,
        description=(
            "Least time between two fetches of one issuer's JWKS when a token names an unknown "
            "key (key rotation), so unknown `kid`s cannot make the server hammer the issuer."
        ),
    )
    oidc_leeway_seconds: int = Field(
        default=30, ge=0, le=300, description="Clock skew allowed on `exp` and `nbf` of external tokens."
    )
    env_dir: Path | None = Field(
        default=None,
        description=(
            "Where Python environments are built and cached by content hash. Defaults to "
            "`{home}/envs`. Several servers (or test runs) may share one."
        ),
    )
    uv_cache_dir: Path | None = Field(
        default=None, description="uv's package cache, reused across builds. Defaults to uv's own."
    )
    baseline_requirements: list[str] = Field(
        default=["cognite-sdk==8.22.0"],
        description="Packages every function environment has (the runtime baseline).",
    )
    default_runtime: str = Field(
        default="py311", description="Runtime used when a function does not ask for one."
    )
    max_upload_bytes: int = Field(
        default=200 * 1024 * 1024, description="Largest file accepted by the Files API upload."
    )
    max_code_bytes: int = Field(
        default=500 * 1024 * 1024, description="Largest total size of a function's unpacked code."
    )
    max_zip_entries: int = Field(default=20_000, description="Most entries a function zip may hold.")
    max_zip_ratio: int = Field(
        default=200, description="Largest compression ratio of one zip entry (zip bomb guard)."
    )
    build_timeout_seconds: int = Field(
        default=600, description="Longest a function's environment build may take."
    )
    executor: Literal["local", "ray"] = Field(
        default="local", description="Where calls run: `local` (forked workers) or `ray`."
    )
    ray_address: str | None = Field(
        default=None,
        description=(
            "Ray cluster address for `executor=ray` (the head's GCS `host:port`, or `auto` for "
            "the cluster of the node this server runs on; the default when unset). See "
            "docs/scale-out.md."
        ),
    )
    ray_start_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description=(
            "With `executor=ray`: longest a call may wait for a Ray node with its CPU and memory "
            "free (autoscaling included) before it fails saying so."
        ),
    )
    call_timeout_seconds: int = Field(
        default=540, ge=1, description="Wall-clock limit of one call (the `limits` timeoutMinutes)."
    )
    call_memory_default_gb: float = Field(default=1.5, description="Memory per call by default.")
    call_memory_max_gb: float = Field(default=5.0, description="Most memory a function may ask for.")
    call_memory_min_gb: float = Field(default=0.1, description="Least memory a function may ask for.")
    call_cpu_default: float = Field(default=1.0, description="CPU cores per call by default.")
    call_cpu_max: float = Field(default=3.0, description="Most CPU cores a function may ask for.")
    call_cpu_min: float = Field(default=0.1, description="Least CPU cores a function may ask for.")
    call_cpu_seconds: float | None = Field(
        default=None,
        gt=0,
        description=(
            "CPU time one call's process may use (RLIMIT_CPU) before it is stopped. Defaults "
            "to what the function's `cpu` cores allow within the call timeout."
        ),
    )
    call_max_processes: int = Field(default=64, description="Most processes one call may run.")
    call_max_file_bytes: int = Field(
        default=512 * 1024 * 1024, description="Largest file one call may write."
    )
    call_max_open_files: int = Field(default=1024, description="Most files one call may hold open.")
    call_reply_wait_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description=(
            "How long `POST …/functions/{id}/call` waits for the call to end before answering "
            "with it still `Running`. A call that ends sooner is answered `Completed` (or "
            "`Failed`/`Timeout`), so cognite-sdk's `func.call()` needs no polling; 0 answers at "
            "once. A request may ask for its own wait with `?waitSeconds=`."
        ),
    )
    call_data_max_bytes: int = Field(default=9 * 1024 * 1024, description="Largest call `data`.")
    response_max_bytes: int = Field(
        default=1024 * 1024, description="Largest JSON response a call may return."
    )
    log_max_bytes: int = Field(default=1024 * 1024, description="Log bytes kept per call.")
    max_running_calls_per_function: int = Field(
        default=100, description="Calls of one function running at once; more wait in order."
    )
    max_running_calls_per_project: int = Field(
        default=250, description="Calls of one project running at once; more wait in order."
    )
    isolation: Literal["auto", "bwrap", "uid", "none"] = Field(
        default="auto",
        description=(
            "How calls are kept from the server's files and from other functions (local "
            "executor): `bwrap` (a bubblewrap sandbox per function, as its own uid), `uid` "
            "(its own uid only), `none`, or `auto` (the best this host supports; the choice "
            "is logged at start). See docs/isolation.md."
        ),
    )
    isolation_uid_base: int = Field(
        default=200_000,
        ge=1000,
        description="First uid (and gid) of the range functions run as: `base + function id % count`.",
    )
    isolation_uid_count: int = Field(
        default=65_536, ge=1, description="Number of uids in the range functions run as."
    )
    network: Literal["internet", "api-only", "none"] = Field(
        default="internet",
        description=(
            "What function code (calls and builds) may reach over the network, with isolation "
            "`bwrap` (each sandbox has a network namespace of its own): `internet` (this "
            "server's API, and public addresses through an HTTP proxy set in `HTTPS_PROXY`), "
            "`api-only` (the API), or `none`. Never the host's loopback services, its other "
            "addresses, private or link-local ranges, unless `network_allow` lists them. "
            "Builds also reach the package indexes they name. See docs/isolation.md."
        ),
    )
    network_allow: list[str] = Field(
        default=[],
        description=(
            "Extra destinations function code may reach (through the proxy), as a JSON list of "
            'CIDRs: `["10.20.0.0/16", "192.0.2.7/32"]`. Applies to every policy but `none`.'
        ),
    )
    ray_allow_unisolated: bool = Field(
        default=False,
        description=(
            "With `executor=ray`: let Ray nodes that cannot isolate function code (no "
            "bubblewrap, not root) run calls unisolated. Off: such nodes refuse calls, saying why."
        ),
    )
    zygote_memory_budget_mb: int = Field(
        default=2048,
        description=(
            "Memory (PSS) that idle function zygotes may hold together; beyond it the least "
            "recently used idle ones are stopped (their next call starts one again)."
        ),
    )
    replica_heartbeat_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often this server records in the database that it is alive.",
    )
    replica_dead_after_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "A replica silent this long is gone: the others fail the calls it left Running. "
            "Keep it several heartbeats long, and above the clock skew between servers."
        ),
    )
    max_functions_per_project: int = Field(default=100, description="Functions one project may hold.")
    versions_kept: int = Field(
        default=5,
        ge=1,
        description=(
            "Earlier Ready versions of a function whose code and environment are kept so it can "
            "be rolled back to them at once (the current version is always kept); older ones are "
            "retired and can no longer be rolled back to."
        ),
    )
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024,
        description="Largest JSON request body (after gzip decompression).",
    )
    max_json_depth: int = Field(
        default=100, ge=2, description="Deepest nesting of arrays and objects a JSON request body may have."
    )
    rate_limit_per_second: float = Field(
        default=1000.0,
        ge=0,
        description=(
            "Requests per second one principal (token subject) may make, sustained; beyond "
            "it the answer is 429 with `Retry-After`, which cognite-sdk retries. 0: no limit."
        ),
    )
    rate_limit_burst: int = Field(
        default=2000, ge=1, description="Requests one principal may make at once before the rate applies."
    )
    http_header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Longest a client may take to send a request's headers (from connecting, or from "
            "the request's first byte); slower connections are answered 408 and closed."
        ),
    )
    http_body_idle_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest pause allowed while a client sends a request body; then 408.",
    )
    http_keep_alive_seconds: int = Field(
        default=5, ge=1, description="How long an idle keep-alive connection stays open."
    )

    max_schedules_per_function: int = Field(default=100, description="Schedules one function may have.")
    max_schedules_per_project: int = Field(default=1000, description="Schedules one project may have.")
    scheduler_enabled: bool = Field(
        default=True,
        description="Run the scheduler in this process (every replica may; leases keep fires unique).",
    )
    scheduler_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        description=(
            "Longest the scheduler sleeps between looks at the database; it wakes earlier for "
            "a schedule due sooner in this process."
        ),
    )
    scheduler_lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a replica holds a claimed schedule before another may take it over.",
    )
    scheduler_missed_run_grace_seconds: float = Field(
        default=600.0,
        ge=0,
        description=(
            "Missed-run policy: a due time found late (server down or overloaded) still runs, "
            "once, if it is late by less than this; older due times are recorded as missed."
        ),
    )
    scheduler_seconds_cron: bool = Field(
        default=False,
        description=(
            "Testing aid: also accept 6-field cron expressions whose first field is seconds. "
            "Keep off in production."
        ),
    )

    blob_store: Literal["local", "database"] = Field(
        default="local",
        description=(
            "Where uploaded file bytes live: `local` (a directory under `{home}/blobs`) or "
            "`database` (shared by every replica on the same database; capped by "
            "`database_blob_max_bytes`)."
        ),
    )
    database_blob_max_bytes: int = Field(
        default=100 * 1024 * 1024, description="Largest blob kept in the database blob store."
    )

    log_format: Literal["text", "json"] = Field(
        default="text",
        description=(
            "Format of the server's own log lines on stderr: `text` for people, `json` (one "
            "object per line: time, level, logger, message, and exception) for log collectors."
        ),
    )
    metrics_token: str | None = Field(
        default=None,
        description=(
            "When set, `GET /metrics` requires `Authorization: Bearer <this token>`; when "
            "unset the Prometheus endpoint is open (keep it on an internal network)."
        ),
    )
    ui_session_seconds: float = Field(
        default=8 * 3600,
        gt=0,
        description=(
            "How long a web page sign-in lasts. Sessions live in the server's memory: a "
            "restart signs everyone out, and several replicas need sticky sessions."
        ),
    )

    @field_validator("network_allow")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        try:
            for cidr in value:
                ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError as exc:
            raise ValueError(f"FNHOST_NETWORK_ALLOW: {exc} (write CIDRs such as 10.20.0.0/16)") from None
        return value

    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'fnhost.db').resolve()}"

    def sqlite_file(self) -> Path | None:
        """The database file, when the database is SQLite on disk."""
        url = self.resolved_database_url()
        return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None

    def resolved_env_dir(self) -> Path:
        return (self.env_dir or self.home / "envs").resolve()

    def sandbox_api_port(self) -> int:
        """The loopback port a sandbox's ``client`` reaches the API on: the public URL's own
        port where it can be (so code that names the server's URL keeps working), else 8000."""
        port = urlsplit(self.resolved_public_url()).port or 0
        return port if port >= 1024 else SANDBOX_API_PORT_DEFAULT


def markdown_reference() -> str:
    """The configuration reference (docs/configuration.md), generated from the fields above."""
    lines = [
        "# Configuration",
        "",
        "Every setting is read from an environment variable with the `FNHOST_` prefix.",
        "List values are JSON (`FNHOST_BASELINE_REQUIREMENTS='[\"cognite-sdk==8.22.0\"]'`).",
        "This page is generated by `scripts/gen-config-docs`; a test fails when it is stale.",
        "",
        "| variable | default | description |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "(unset)" if default is None else f"`{default}`"
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `FNHOST_{name.upper()}` | {shown} | {description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown_reference(), end="")
