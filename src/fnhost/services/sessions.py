"""Sessions: created by client credentials or token exchange, bound by a one-time nonce.

A consumer (a call, a schedule) redeems the nonce once, within ``nonce_lifetime``; the
server then mints short-lived tokens for the session (``sid`` claim) whenever function
code needs one. Chained sessions (function calling function) are made from a session
principal and carry ``depth``; past ``max_depth`` they are refused.
"""

from __future__ import annotations

import builtins
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from fnhost.auth.capabilities import Principal
from fnhost.auth.passwords import sha256_hex
from fnhost.clock import now_ms
from fnhost.errors import Forbidden, InvalidRequest, Unauthenticated
from fnhost.services.access import Access
from fnhost.services.identifiers import id_entry, resolve_all
from fnhost.store import sessions as store
from fnhost.store.db import Database
from fnhost.store.direct import Direct
from fnhost.store.sessions import SessionRow

SESSION_STATUSES = ("READY", "ACTIVE", "CANCELLED", "EXPIRED", "REVOKED", "ACCESS_LOST")
# Sessions of calls live as long as a call may; schedule sessions are extended on binding.
DEFAULT_SESSION_LIFETIME_MS = 24 * 3600 * 1000
FOREVER_MS = 100 * 365 * 24 * 3600 * 1000


@dataclass(frozen=True)
class SessionRequest:
    """How to make a session: from a client's credentials, or by token exchange (as the
    caller; ``oneshot``: one token only)."""

    client_id: str | None = None
    client_secret: str | None = None
    token_exchange: bool = False
    oneshot_token_exchange: bool = False


TOKEN_EXCHANGE = SessionRequest(token_exchange=True)


@dataclass(frozen=True)
class CreatedSession:
    id: int
    type: str
    status: str
    nonce: str
    client_id: str | None


class Sessions:
    def __init__(
        self, db: Database, access: Access, nonce_lifetime_s: int, max_chain_depth: int = 3
    ) -> None:
        self.db = db
        self.access = access
        self.nonce_lifetime_ms = nonce_lifetime_s * 1000
        self.max_chain_depth = max_chain_depth
        self._direct = Direct(db)  # one session per call: its insert is on the call path

    def create(self, project: str, caller: Principal, request: SessionRequest) -> CreatedSession:
        self.access.require(caller, project, "sessionsAcl", "CREATE")
        if request.client_id is not None or request.client_secret is not None:
            cid, secret = request.client_id, request.client_secret
            if cid is None or secret is None:
                raise InvalidRequest("clientId and clientSecret must both be strings.")
            client = self.access.verify_client(cid, secret)
            principal = Principal(
                subject=client.client_id,
                issuer=self.access.tokens.issuer,
                client_id=client.client_id,
                admin=client.is_admin,
            )
            if not self.access.granted(principal, project):
                raise Forbidden(f"Client {cid!r} has no access to project {project!r}.")
            kind, depth, parent = "CLIENT_CREDENTIALS", 0, None
        elif request.token_exchange or request.oneshot_token_exchange:
            kind = "TOKEN_EXCHANGE" if request.token_exchange else "ONESHOT_TOKEN_EXCHANGE"
            principal = caller
            parent = caller.session_id
            depth = caller.session_depth + 1 if caller.session_id is not None else 0
            if depth > self.max_chain_depth:
                raise Forbidden(
                    f"Chained sessions are limited to a depth of {self.max_chain_depth}; "
                    f"this call is already {caller.session_depth} deep."
                )
        else:
            raise InvalidRequest(
                "A session needs clientId and clientSecret, tokenExchange: true, "
                "or oneshotTokenExchange: true."
            )
        nonce = secrets.token_urlsafe(32)
        now = now_ms()
        session_id = self._direct.insert_session(
            project=project,
            kind=kind,
            client_id=principal.client_id,
            principal=principal.as_session_principal(),
            nonce_hash=sha256_hex(nonce),
            nonce_expires_time=now + self.nonce_lifetime_ms,
            parent_session_id=parent,
            depth=depth,
            created_time=now,
            expiration_time=now + DEFAULT_SESSION_LIFETIME_MS,
        )
        return CreatedSession(session_id, kind, "READY", nonce, principal.client_id)

    def redeem(
        self, project: str, nonce: Any, *, lifetime_ms: int | None = None, session: Session | None = None
    ) -> SessionRow:
        """Bind a session by its nonce, once. ``lifetime_ms=None`` keeps it until revoked.

        With ``session``, inside the caller's transaction (which then commits or undoes both).
        """
        if not isinstance(nonce, str) or not nonce:
            raise InvalidRequest("A nonce (from POST /sessions) is required.")
        if session is None:
            with self.db.write() as s:
                return self.redeem(project, nonce, lifetime_ms=lifetime_ms, session=s)
        now = now_ms()
        row = store.by_nonce_hash(sha256_hex(nonce), session=session)
        if row is None or row.project != project:
            raise Unauthenticated("The nonce is not valid in this project.")
        if row.nonce_used:
            raise Unauthenticated("The nonce has already been used.")
        if row.nonce_expires_time is not None and row.nonce_expires_time < now:
            raise Unauthenticated("The nonce has expired; create a new session.")
        if row.status != "READY":
            raise Unauthenticated(f"The nonce's session is {row.status.lower()}.")
        row.nonce_used = True
        row.status = "ACTIVE"
        row.expiration_time = now + (lifetime_ms if lifetime_ms is not None else FOREVER_MS)
        session.flush()
        return row

    def principal_of(self, session_id: int) -> Principal:
        """The principal a session acts as, if the session is still usable."""
        return self.access._session_principal(session_id)

    def mint_token(self, session_id: int, lifetime_s: int) -> str:
        """A token acting as the session's principal; refused once the session is revoked."""
        self.principal_of(session_id)  # raises if revoked, expired or its client is gone
        with self.db.read() as s:
            row = store.get_any(session_id, session=s)
        if row is None:
            raise Unauthenticated(f"Session {session_id} does not exist.")
        token, _ = self.access.tokens.issue(
            row.principal["subject"], lifetime_s, sid=row.id, project=row.project
        )
        return token

    def list(
        self, project: str, caller: Principal, *, limit: int, cursor: int, status: str | None
    ) -> builtins.list[SessionRow]:
        self.access.require(caller, project, "sessionsAcl", "LIST")
        if status is not None:
            status = status.upper()
            if status not in SESSION_STATUSES:
                raise InvalidRequest(f"Unknown session status {status!r}.")
        with self.db.read() as s:
            return store.list_page(project, session=s, limit=limit, after_id=cursor, status=status)

    def by_ids(
        self, project: str, caller: Principal, ids: builtins.list[int], ignore_unknown: bool
    ) -> builtins.list[SessionRow]:
        self.access.require(caller, project, "sessionsAcl", "LIST")
        with self.db.read() as s:
            rows = [store.get(project, i, session=s) for i in ids]
        return resolve_all(
            ids, rows, what="Sessions", ignore_unknown=ignore_unknown, entry=id_entry, dedupe=False
        )

    def revoke(self, project: str, caller: Principal, ids: builtins.list[int]) -> builtins.list[SessionRow]:
        self.access.require(caller, project, "sessionsAcl", "DELETE")
        with self.db.write() as s:
            rows = [store.get(project, i, session=s) for i in ids]
            found = resolve_all(
                ids, rows, what="Sessions", ignore_unknown=False, entry=id_entry, dedupe=False
            )
            for r in found:
                r.status = "REVOKED"
            return found
