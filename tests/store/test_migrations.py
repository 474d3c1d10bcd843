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


def test_0005_gives_each_function_a_version_1_of_its_code_and_each_call_its_version(url: str) -> None:
    db = Database(url)
    try:
        db.migrate(target="0004")
        with db.engine.begin() as conn:
            # a database made before 0005 (0001 builds today's tables while unreleased)
            conn.exec_driver_sql("DROP TABLE function_versions")
            conn.exec_driver_sql("ALTER TABLE functions DROP COLUMN version")
            conn.exec_driver_sql("ALTER TABLE functions DROP COLUMN version_error")
            conn.exec_driver_sql("ALTER TABLE calls DROP COLUMN function_version")
            conn.exec_driver_sql("INSERT INTO projects (name, created_time) VALUES ('p', 1)")
            conn.exec_driver_sql(
                "INSERT INTO functions (project, name, file_id, function_path, cpu, memory, runtime, status,"
                " env_hash, created_time, ready_time, env_vars)"
                " VALUES ('p', 'old', 7, 'handler.py', 0.25, 1.5, 'py311', 'Ready', 'abc', 10, 20, '{\"A\": \"1\"}')"
            )
            conn.exec_driver_sql(
                "INSERT INTO calls (project, function_id, status, start_time) VALUES ('p', 1, 'Completed', 30)"
            )
        db.migrate()
        assert db.revision() == "0005"
        with db.engine.connect() as conn:
            version = conn.exec_driver_sql(
                "SELECT function_id, number, file_id, function_path, cpu, memory, runtime, status, env_hash,"
                " ready_time, retired_time FROM function_versions"
            ).all()
            assert [tuple(v) for v in version] == [(1, 1, 7, "handler.py", 0.25, 1.5, "py311", "Ready", "abc", 20, None)]
            assert conn.exec_driver_sql("SELECT version, version_error FROM functions").one() == (1, None)
            assert conn.exec_driver_sql("SELECT function_version FROM calls").scalar() == 1
        db.migrate()  # again: nothing more to do
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM function_versions").scalar() == 1
    finally:
        db.dispose()
