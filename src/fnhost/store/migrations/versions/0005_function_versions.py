"""Function versions: the function_versions table, the function's current version, the
version each call was accepted on; every existing function gets a version 1 from its
current code and build.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# a function's columns copied into its version 1
COPIED = (
    "file_id", "function_path", "env_vars", "cpu", "memory", "runtime", "runtime_version", "index_url",
    "extra_index_urls", "status", "error", "env_hash", "created_time", "ready_time",
)


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    # 0001 builds the schema from the table modules while unreleased: a new database has
    # the table and columns already, one made before this revision does not
    if "function_versions" not in inspector.get_table_names():
        op.create_table(
            "function_versions",
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                      autoincrement=True),
            sa.Column("function_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                      sa.ForeignKey("functions.id", ondelete="CASCADE"), nullable=False, index=True),
            sa.Column("project", sa.String(64), nullable=False),
            sa.Column("number", sa.Integer, nullable=False),
            sa.Column("file_id", sa.Integer, nullable=False),
            sa.Column("code_sha256", sa.String(64)),
            sa.Column("function_path", sa.String(500), nullable=False),
            sa.Column("env_vars", sa.JSON),
            sa.Column("cpu", sa.Float, nullable=False),
            sa.Column("memory", sa.Float, nullable=False),
            sa.Column("runtime", sa.String(16), nullable=False),
            sa.Column("runtime_version", sa.String(64)),
            sa.Column("index_url", sa.String(2048)),
            sa.Column("extra_index_urls", sa.JSON),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("error", sa.JSON),
            sa.Column("env_hash", sa.String(64)),
            sa.Column("created_time", sa.BigInteger, nullable=False),
            sa.Column("ready_time", sa.BigInteger),
            sa.Column("retired_time", sa.BigInteger),
            sa.Column("created_by", sa.String(128)),
            sa.Column("build_owner", sa.String(64)),
            sa.Column("build_lease_until", sa.BigInteger),
            sa.UniqueConstraint("function_id", "number"),
            sa.Index("ix_function_versions_status_lease", "status", "build_lease_until"),
        )
    have = {c["name"] for c in inspector.get_columns("functions")}
    with op.batch_alter_table("functions") as batch:
        if "version" not in have:
            batch.add_column(sa.Column("version", sa.Integer, nullable=False, server_default="1"))
        if "version_error" not in have:
            batch.add_column(sa.Column("version_error", sa.JSON, nullable=True))
    if "function_version" not in {c["name"] for c in inspector.get_columns("calls")}:
        with op.batch_alter_table("calls") as batch:
            batch.add_column(sa.Column("function_version", sa.Integer, nullable=True))
    columns = ", ".join(COPIED)
    op.execute(
        "INSERT INTO function_versions (function_id, project, number, " + columns + ")"  # noqa: S608
        " SELECT id, project, 1, " + columns + " FROM functions f"
        " WHERE NOT EXISTS (SELECT 1 FROM function_versions v WHERE v.function_id = f.id)"
    )
    op.execute("UPDATE calls SET function_version = 1 WHERE function_version IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("function_version")
    with op.batch_alter_table("functions") as batch:
        batch.drop_column("version_error")
        batch.drop_column("version")
    op.drop_table("function_versions")
