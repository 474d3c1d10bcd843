"""What each call used: CPU time, peak memory, and when it was handed to the executor.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ("dispatch_time", "cpu_user_ms", "cpu_system_ms", "peak_memory_bytes")


def upgrade() -> None:
    # 0001 builds the schema from the table modules while unreleased: a new database has
    # the columns already, one made before this revision does not
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("calls")}
    with op.batch_alter_table("calls") as batch:
        for name in COLUMNS:
            if name not in have:
                batch.add_column(sa.Column(name, sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        for name in COLUMNS:
            batch.drop_column(name)
