"""Authentication (token → principal) and authorisation (principal and project → capabilities)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from fnhost.auth import capabilities as caps
from fnhost.auth import passwords
from fnhost.auth.capabilities import Principal
from fnhost.auth.oidc import ExternalIssuers
from fnhost.auth.tokens import TokenService, unverified_claims
from fnhost.clock import now_ms
from fnhost.errors import Forbidden, NotFound, Unauthenticated
from fnhost.store import clients as client_store
from fnhost.store import groups as group_store
from fnhost.store import projects as project_store
from fnhost.store import sessions as session_store
from fnhost.store.clients import ClientRow
from fnhost.store.db import Database
from fnhost.store.direct import Direct
from fnhost.store.groups import GroupRow


@dataclass
class _IdentityView:
    """Clients, projects and groups as read under one identity version (see store.identity).

    Every request needs them; while the version is unchanged, what was read stays true.
    """

    version: int
    clients: dict[str, ClientRow | None] = field(default_factory=dict)
    projects: dict[str, bool] = field(default_factory=dict)
    groups: dict[str, list[GroupRow]] = field(default_factory=dict)
    # client id -> HMAC of the secret that passed scrypt under this version (see verify_client)
    verified: dict[str, bytes] = field(default_factory=dict)


@dataclass
class _Snapshot:
    view: _IdentityView | None = None


# Set for the length of one HTTP request (see ``one_identity_read``); shared by reference with
# the worker threads the request's dependencies and route run on, which get a copy of the
# context, so what one of them reads the others reuse.
_request_snapshot: ContextVar[_Snapshot | None] = ContextVar("fnhost_identity_snapshot", default=None)


@contextmanager
def one_identity_read() -> Iterator[None]:
    """Inside, the identity version is read once and every check uses what it read then.

    A request authenticates, then checks capabilities, sometimes more than once: one
    consistent view of clients, projects and groups per request instead of one database read
    for each. Work outside a request (scheduler, builder) reads the version every time.
    """
    token = _request_snapshot.set(_Snapshot())
    try:
        yield
    finally:
        _request_snapshot.reset(token)


class Access:
    def __init__(
        self,
        db: Database,
        tokens: TokenService,
        token_lifetime: int,
        external: ExternalIssuers | None = None,
    ) -> None:
        self.db = db
        self.tokens = tokens
        self.token_lifetime = token_lifetime
        self.external = external
        self._direct = Direct(db)  # the identity version is read once per request
        self._view = _IdentityView(version=-1)
        self._view_lock = threading.Lock()
        self._proof_key = secrets.token_bytes(32)

    # -- the built-in token endpoint -------------------------------------------------
    def client_credentials_grant(self, client_id: str, client_secret: str) -> tuple[str, int]:
        row = self.verify_client(client_id, client_secret)
        token, _exp = self.tokens.issue(row.client_id, self.token_lifetime, client_id=row.client_id)
        return token, self.token_lifetime

    def verify_client(self, client_id: str, client_secret: str) -> ClientRow:
        view = self._current_view()
        row = self._client(client_id, view)
        # cognite-sdk sends the client secret with every POST /sessions (one per call), and
        # scrypt is slow on purpose. A secret already verified under this identity version is
        # recognised by a keyed hash kept only in memory; anything else (unknown client, wrong
        # or new secret) takes the full scrypt path, so timing tells nothing new.
        proof = hmac.new(self._proof_key, client_secret.encode(), hashlib.sha256).digest()
        known = view.verified.get(client_id)
        if row is not None and known is not None and hmac.compare_digest(known, proof):
            return row
        # same work whether or not the client exists (see passwords.verify_secret)
        ok = passwords.verify_secret(client_secret, row.secret_hash if row else None)
        if row is None or not ok:
            raise Unauthenticated("Invalid client credentials.")
        view.verified[client_id] = proof
        return row

    # -- what the identity tables say, cached per identity version -----------------------
    def _current_view(self) -> _IdentityView:
        snapshot = _request_snapshot.get()
        if snapshot is not None and snapshot.view is not None:
            return snapshot.view
        version = self._direct.identity_version()
        with self._view_lock:
            if self._view.version != version:
                self._view = _IdentityView(version)
            view = self._view
        if snapshot is not None:
            snapshot.view = view
        return view

    def _client(self, client_id: str, view: _IdentityView) -> ClientRow | None:
        if client_id not in view.clients:
            with self.db.read() as s:
                view.clients[client_id] = client_store.by_client_id(client_id, session=s)
        return view.clients[client_id]

    def _project_exists(self, project: str, view: _IdentityView) -> bool:
        if project not in view.projects:
            with self.db.read() as s:
                view.projects[project] = project_store.get(project, session=s) is not None
        return view.projects[project]

    def _groups(self, project: str, view: _IdentityView) -> list[GroupRow]:
        if project not in view.groups:
            with self.db.read() as s:
                view.groups[project] = group_store.list_for_project(project, session=s)
        return view.groups[project]

    # -- authentication -----------------------------------------------------------------
    def seen_before(self, authorization: str | None) -> bool:
        """Whether ``authenticate`` will find this bearer token verified already (no
        signature to check, no issuer's keys to fetch)."""
        if not authorization or authorization[:7].lower() != "bearer ":
            return False
        return self.tokens.verified_before(authorization[7:].strip()) is not None

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("Missing Authorization header with a bearer token.")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("The Authorization header must be 'Bearer <token>'.")
        token = token.strip()
        claims = self.tokens.verified_before(token)
        if claims is None:
            issuer = unverified_claims(token).get("iss")
            if not self.tokens.is_ours(issuer):
                return self.authenticate_external(token, issuer)
            claims = self.tokens.verify(token)
        sid = claims.get("sid")
        if sid is not None:
            return self._session_principal(int(sid))
        client = self._client(claims["sub"], self._current_view())
        if client is None:
            raise Unauthenticated("The token's client no longer exists.")
        return Principal(
            subject=client.client_id,
            issuer=self.tokens.issuer,
            client_id=client.client_id,
            admin=client.is_admin,
        )

    def authenticate_external(self, token: str, issuer: Any) -> Principal:
        """Tokens of operator-configured external issuers (``FNHOST_OIDC_ISSUERS``)."""
        if self.external is None or not self.external.knows(issuer):
            raise Unauthenticated(f"Tokens from issuer {issuer!r} are not accepted by this server.")
        return self.external.verify(token, issuer)

    def _session_principal(self, session_id: int) -> Principal:
        with self.db.read() as s:
            row = session_store.get_any(session_id, session=s)
        if row is None or row.status not in ("READY", "ACTIVE"):
            state = "unknown" if row is None else row.status.lower()
            raise Unauthenticated(f"The token's session {session_id} is {state}.")
        if row.expiration_time < now_ms():
            raise Unauthenticated(f"The token's session {session_id} has expired.")
        principal = Principal.from_session(row.principal, row.id, row.depth, row.project)
        client_id = principal.client_id if principal.issuer == self.tokens.issuer else None
        if client_id is not None and self._client(client_id, self._current_view()) is None:
            raise Unauthenticated(
                f"The token's session {session_id} belongs to client "
                f"{principal.client_id!r}, which was deleted."
            )
        return principal

    # -- authorisation ---------------------------------------------------------------------
    def _member_groups(
        self, principal: Principal, project: str, view: _IdentityView | None = None
    ) -> list[GroupRow]:
        out = []
        for g in self._groups(project, view or self._current_view()):
            if g.members == "allUserAccounts":
                out.append(g)
                continue
            members = g.members or []
            # built-in principals are members by client id; external ones by their subject
            builtin = principal.issuer == self.tokens.issuer
            by_client = builtin and principal.client_id is not None and principal.client_id in members
            by_subject = not builtin and principal.subject in members
            by_source = g.source_id is not None and g.source_id in principal.groups
            if by_client or by_subject or by_source:
                out.append(g)
        return out

    def group_ids_of(self, principal: Principal, project: str) -> list[int]:
        return [g.id for g in self._member_groups(principal, project)]

    def granted(self, principal: Principal, project: str) -> frozenset[tuple[str, str]]:
        """Every (acl, action) the principal holds in the project; empty if no access."""
        if principal.bound_project is not None and principal.bound_project != project:
            return frozenset()
        view = self._current_view()
        if not self._project_exists(project, view):
            return frozenset()
        if principal.admin:
            return caps.flatten(caps.ALL_CAPABILITIES)
        granted: list[dict[str, Any]] = []
        for g in self._member_groups(principal, project, view):
            granted.extend(g.capabilities)
        return caps.flatten(granted)

    def require(self, principal: Principal, project: str, acl: str, action: str) -> None:
        granted = self.granted(principal, project)
        if not granted:
            # Not Forbidden: a principal must not learn whether another project exists.
            raise Unauthenticated(f"You don't have access to the requested CDF project={project!r}.")
        if not caps.allows(granted, acl, action):
            raise Forbidden(f"Missing capability {acl}:{action} in project {project!r}.")

    def require_project_member(self, principal: Principal, project: str) -> None:
        if not self.granted(principal, project):
            raise Unauthenticated(f"You don't have access to the requested CDF project={project!r}.")

    def projects_of(self, principal: Principal) -> list[str]:
        with self.db.read() as s:
            names = [p.name for p in project_store.list_all(session=s)]
        return [p for p in names if self.granted(principal, p)]

    def ensure_project_exists(self, project: str) -> None:
        with self.db.read() as s:
            if project_store.get(project, session=s) is None:
                raise NotFound(f"Project {project!r} does not exist.")
