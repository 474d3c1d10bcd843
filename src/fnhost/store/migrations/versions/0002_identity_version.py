"""The identity version (see ``fnhost.store.identity``).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # 0001 builds the schema from the table modules while unreleased, so a new database
    # already has the table; one made before this revision does not.
    if "identity_version" not in sa.inspect(op.get_bind()).get_table_names():
        op.create_table(
            "identity_version",
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("version", sa.Integer, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("identity_version")
