"""Store contract tests run against every database backend: SQLite and the real PostgreSQL.

PostgreSQL is the server on 127.0.0.1:5432 (trust auth). When it is unreachable these
tests fail rather than skip: a backend that is not tested is not supported. Only an explicit
FNHOST_TEST_SKIP_POSTGRES=1 turns the failure into a skip (tests/pg.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fnhost.store.db import Database
from tests.pg import create_database, drop_database, require_postgres


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    require_postgres("the store contract tests")
    name, url = create_database()
    yield url
    drop_database(name)


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
