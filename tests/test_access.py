"""Access and TokenService on a real SQLite store, without a server: what they read and cache.

The HTTP behaviour of both (401/403 shapes, revocation, external issuers) is tested against a
live server in test_identity.py and test_oidc.py; these pin down the caching those rely on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from fnhost.errors import Unauthenticated
from fnhost.services.access import one_identity_read
from fnhost.settings import Settings
from fnhost.store import clients as client_store
from fnhost.system import System


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    system = System(Settings(home=tmp_path, isolation="none"))
    system.migrate()
    yield system
    system.close()


def identity_version_reads(system: System) -> list[str]:
    """Every statement that reads the identity version, from now on."""
    seen: list[str] = []

    def record(statement: str) -> None:
        if "FROM identity_version" in statement:
            seen.append(statement)

    # at the driver, under both the ORM and the statements the call path sends directly
    @event.listens_for(system.db.engine, "checkout")
    def trace(dbapi_connection: Any, *_args: Any) -> None:
        dbapi_connection.set_trace_callback(record)

    return seen


def bearer(system: System, client_id: str, lifetime: int = 600) -> str:
    token, _exp = system.tokens.issue(client_id, lifetime, client_id=client_id)
    return f"Bearer {token}"


def test_one_request_reads_the_identity_version_once(system: System) -> None:
    creds = system.create_client("reader", admin=False)
    auth = bearer(system, creds["client_id"])
    reads = identity_version_reads(system)

    principal = system.access.authenticate(auth)
    system.access.granted(principal, creds["project"])
    assert len(reads) == 2  # outside a request: every check reads the version

    reads.clear()
    with one_identity_read():
        principal = system.access.authenticate(auth)
        system.access.granted(principal, creds["project"])
        system.access.granted(principal, creds["project"])
    assert len(reads) == 1


def test_a_change_between_requests_is_seen_by_the_next_request(system: System) -> None:
    creds = system.create_client("doomed", admin=False)
    auth = bearer(system, creds["client_id"])
    with one_identity_read():
        assert system.access.authenticate(auth).client_id == creds["client_id"]
    with system.db.write() as s:
        row = client_store.by_client_id(creds["client_id"], session=s)
        assert row is not None
        s.delete(row)
    with one_identity_read(), pytest.raises(Unauthenticated, match="no longer exists"):
        system.access.authenticate(auth)


def test_a_verified_token_is_served_from_the_cache_only_while_in_date(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = system.create_client("cached", admin=False)
    token = bearer(system, creds["client_id"], lifetime=60).split(" ", 1)[1]
    assert system.tokens.verified_before(token) is None  # never verified

    claims = system.tokens.verify(token)
    assert system.tokens.verified_before(token) == claims

    later = time.time() + 60 + 6  # past exp and the 5 s leeway
    monkeypatch.setattr("fnhost.auth.tokens.time.time", lambda: later)
    assert system.tokens.verified_before(token) is None


def test_a_tampered_token_is_not_taken_for_a_cached_one(system: System) -> None:
    creds = system.create_client("tamper", admin=False)
    auth = bearer(system, creds["client_id"])
    system.access.authenticate(auth)  # verified and cached
    header, payload, signature = auth.split(" ", 1)[1].split(".")
    forged = f"Bearer {header}.{payload}.{signature[:-4]}AAAA"
    with pytest.raises(Unauthenticated, match="invalid"):
        system.access.authenticate(forged)
