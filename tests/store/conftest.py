"""Store contract tests run against every database backend: SQLite and the real PostgreSQL.

PostgreSQL is the server on 127.0.0.1:5432 (trust auth). When it is unreachable these
tests fail rather than skip: a backend that is not tested is not supported.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from fnhost.store.db import Database

PG_ADMIN_DSN = os.environ.get("FNHOST_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")


def _pg_params() -> dict[str, str]:
    return dict(part.split("=", 1) for part in PG_ADMIN_DSN.split())


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"fnhost_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is required for the store contract tests and is unreachable: {exc}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    p = _pg_params()
    yield f"postgresql+psycopg://{p.get('user', 'postgres')}@{p.get('host', '127.0.0.1')}:{p.get('port', '5432')}/{name}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    db = Database(url)
    db.migrate()
    yield db
    db.dispose()
