"""Fresh databases on the real PostgreSQL (127.0.0.1:5432, trust auth) for tests and benchmarks.

Unreachable PostgreSQL fails the test that needs it: a backend that is not tested is not
supported. ``FNHOST_TEST_SKIP_POSTGRES=1`` turns that into a skip, for a machine knowingly
without PostgreSQL; CI never sets it.
"""

from __future__ import annotations

import os
import secrets

import psycopg
import pytest

PG_ADMIN_DSN = os.environ.get("FNHOST_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")


def _params() -> dict[str, str]:
    return dict(part.split("=", 1) for part in PG_ADMIN_DSN.split())


def _admin() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)


def create_database() -> tuple[str, str]:
    """A new empty database ``fnhost_test_<random>``: (name, SQLAlchemy URL)."""
    name = f"fnhost_test_{secrets.token_hex(4)}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    p = _params()
    url = f"postgresql+psycopg://{p.get('user', 'postgres')}@{p.get('host', '127.0.0.1')}:{p.get('port', '5432')}/{name}"
    return name, url


def drop_database(name: str) -> None:
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def require_postgres(what: str) -> None:
    """Fail (or, with FNHOST_TEST_SKIP_POSTGRES=1, skip) when PostgreSQL is unreachable."""
    try:
        _admin().close()
    except psycopg.OperationalError as exc:
        if os.environ.get("FNHOST_TEST_SKIP_POSTGRES") == "1":
            pytest.skip(f"FNHOST_TEST_SKIP_POSTGRES=1 and PostgreSQL is unreachable: {exc}")
        pytest.fail(f"PostgreSQL is required for {what} and is unreachable: {exc}")
