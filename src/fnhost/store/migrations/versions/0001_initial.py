"""Initial schema.

While the project is unreleased this revision builds the schema from the table modules;
it is frozen into explicit operations before the first release (a test then checks that
migrations and models agree).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from fnhost.store.tables import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
