"""Replicas that start together on one empty database all come up: one migrates, the rest
find the schema at head. Each "replica" is its own process, as in production (Alembic's
migration context is global to a process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import inspect

from fnhost.store.db import Database

MIGRATE = "import sys; from fnhost.store.db import Database; Database(sys.argv[1]).migrate()"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_replicas_migrating_at_once_all_succeed(url: str) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", MIGRATE, url], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [proc.communicate(timeout=120)[1] for proc in procs]
    for proc, err in zip(procs, errors, strict=True):
        assert proc.returncode == 0, err[-3000:]
    db = Database(url)
    try:
        tables = set(inspect(db.engine).get_table_names())
        assert {"alembic_version", "calls", "functions", "replicas", "schedules"} <= tables
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    finally:
        db.dispose()
