"""Groups keep their metadata; admin clients become members of the admin group.

A fresh server's first admin client is a member of the default project's ``fnhost-admins``
group, which holds every capability, so ``client.iam.groups.list(all=True)`` lists it as
CDF lists a project's admin group. Databases made before this revision have admin clients
that hold their capabilities without a group: each admin client that is in no group of the
default project joins ``fnhost-admins`` there (the group is made if missing). The default
project is the server's ``FNHOST_DEFAULT_PROJECT`` (``Database.migrate`` passes it), or
``default`` when migrations run without a server.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ADMIN_GROUP = "fnhost-admins"
# what is_admin grants (fnhost.auth.capabilities.ALL_CAPABILITIES when this was written):
# frozen here, so that a later change of the ACL table does not change this migration
ADMIN_CAPABILITIES = [
    {"functionsAcl": {"actions": ["READ", "WRITE", "RUN"], "scope": {"all": {}}}},
    {"filesAcl": {"actions": ["READ", "WRITE"], "scope": {"all": {}}}},
    {"sessionsAcl": {"actions": ["LIST", "CREATE", "DELETE"], "scope": {"all": {}}}},
    {"assetsAcl": {"actions": ["READ", "WRITE"], "scope": {"all": {}}}},
    {"rawAcl": {"actions": ["READ", "WRITE", "LIST"], "scope": {"all": {}}}},
    {"groupsAcl": {"actions": ["READ", "CREATE", "UPDATE", "DELETE", "LIST"], "scope": {"all": {}}}},
    {"projectsAcl": {"actions": ["READ", "CREATE", "UPDATE", "LIST"], "scope": {"all": {}}}},
]

projects = sa.table("projects", sa.column("name", sa.String), sa.column("created_time", sa.BigInteger))
clients = sa.table("clients", sa.column("client_id", sa.String), sa.column("is_admin", sa.Boolean))
groups = sa.table(
    "groups",
    sa.column("id", sa.BigInteger),
    sa.column("project", sa.String),
    sa.column("name", sa.String),
    sa.column("source_id", sa.String),
    sa.column("members", sa.JSON),
    sa.column("capabilities", sa.JSON),
    sa.column("created_time", sa.BigInteger),
)


def upgrade() -> None:
    bind = op.get_bind()
    # 0001 builds the schema from the table modules while unreleased: a new database has it
    if "metadata" not in {c["name"] for c in sa.inspect(bind).get_columns("groups")}:
        with op.batch_alter_table("groups") as batch:
            batch.add_column(sa.Column("metadata", sa.JSON, nullable=True))

    project = context.config.attributes.get("default_project") or "default"
    admins = [r.client_id for r in bind.execute(sa.select(clients.c.client_id).where(clients.c.is_admin))]
    rows = bind.execute(
        sa.select(groups.c.id, groups.c.name, groups.c.members).where(groups.c.project == project)
    ).all()
    grouped = {m for r in rows if isinstance(r.members, list) for m in r.members}
    joining = [a for a in admins if a not in grouped]
    if not joining:
        return
    now = int(time.time() * 1000)
    if bind.execute(sa.select(projects.c.name).where(projects.c.name == project)).first() is None:
        bind.execute(projects.insert().values(name=project, created_time=now))
    admin_group = next((r for r in rows if r.name == ADMIN_GROUP and isinstance(r.members, list)), None)
    if admin_group is None:
        bind.execute(
            groups.insert().values(
                project=project, name=ADMIN_GROUP, source_id=None, members=joining,
                capabilities=ADMIN_CAPABILITIES, created_time=now,
            )
        )  # fmt: skip
    else:
        bind.execute(
            groups.update()
            .where(groups.c.id == admin_group.id)
            .values(members=[*admin_group.members, *joining])
        )
    # clients, projects and groups are cached per identity version (store/identity.py)
    bind.execute(sa.text("UPDATE identity_version SET version = version + 1"))


def downgrade() -> None:
    with op.batch_alter_table("groups") as batch:
        batch.drop_column("metadata")
