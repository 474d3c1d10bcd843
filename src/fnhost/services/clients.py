"""Service clients of the built-in identity provider: made by operators, never through the API.

A client's secret is shown once and stored only as a hash. As in CDF, what a client may do
comes from the groups it is in: an admin joins the project's admin group, a client given
capabilities the group of exactly those (made once, then reused).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from fnhost.auth import passwords
from fnhost.auth.capabilities import ALL_CAPABILITIES
from fnhost.clock import now_ms
from fnhost.services import groups
from fnhost.store import clients as client_store
from fnhost.store import projects as project_store
from fnhost.store.clients import ClientRow
from fnhost.store.db import Database


@dataclass(frozen=True)
class Credentials:
    """What a new client needs to use the SDK (the secret is not kept anywhere else)."""

    client_id: str
    client_secret: str
    token_url: str
    base_url: str
    project: str
    scopes: list[str]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Clients:
    def __init__(self, db: Database, public_url: str, default_project: str) -> None:
        self.db = db
        self.public_url = public_url
        self.default_project = default_project

    def create(
        self,
        name: str,
        *,
        admin: bool,
        project: str | None = None,
        capabilities: list[dict[str, Any]] | None = None,
    ) -> Credentials:
        project = project or self.default_project
        client_id = f"{name}-{secrets.token_hex(4)}"
        secret = passwords.new_secret()
        with self.db.write() as s:
            project_store.ensure(project, session=s)
            client_store.add(
                ClientRow(
                    client_id=client_id,
                    name=name,
                    secret_hash=passwords.hash_secret(secret),
                    is_admin=admin,
                    created_time=now_ms(),
                ),
                session=s,
            )
            if admin:
                groups.join(project, groups.ADMIN_GROUP, ALL_CAPABILITIES, client_id, session=s)
            if capabilities:
                group = groups.capability_group_name(capabilities)
                groups.join(project, group, capabilities, client_id, session=s)
        return Credentials(
            client_id=client_id,
            client_secret=secret,
            token_url=f"{self.public_url}/oauth2/token",
            base_url=self.public_url,
            project=project,
            scopes=[f"{self.public_url}/.default"],
        )

    def any_exist(self) -> bool:
        with self.db.read() as s:
            return bool(client_store.list_all(session=s))
