"""Groups: which principals hold which capabilities in one project.

Members are named by built-in client id (``members``), by an external identity
provider's group id carried in the token's groups claim (``sourceId``), or as
``"allUserAccounts"`` (every authenticated principal). Operator commands (``fnhost admin
groups …``) use the unchecked ``add``/``remove``; API callers go through ``create``,
``list`` and ``delete``, which check ``groupsAcl``.
"""

from __future__ import annotations

import builtins
from typing import Any

from fnhost.auth import capabilities as caps
from fnhost.auth.capabilities import Principal
from fnhost.clock import now_ms
from fnhost.errors import InvalidRequest, NotFound
from fnhost.services.access import Access
from fnhost.store import groups as store
from fnhost.store import projects as project_store
from fnhost.store.db import Database
from fnhost.store.groups import GroupRow

ALL_USER_ACCOUNTS = "allUserAccounts"
MAX_NAME = 140
MAX_MEMBERS = 1000


def parse_capability(spec: str) -> dict[str, Any]:
    """``"functionsAcl:READ,WRITE"`` → ``{"functionsAcl": {"actions": [...], "scope": {"all": {}}}}``."""
    name, sep, actions = spec.partition(":")
    name = name.strip()
    if not sep or not name:
        raise InvalidRequest(f"Capability {spec!r} must look like 'functionsAcl:READ,WRITE'.")
    if not name.endswith("Acl"):
        name += "Acl"
    listed = [a.strip().upper() for a in actions.split(",") if a.strip()]
    capability = {name: {"actions": listed, "scope": {"all": {}}}}
    caps.validate([capability])
    return capability


def _check_item(item: dict[str, Any]) -> dict[str, Any]:
    name = item.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise InvalidRequest(f"name is required: a string of 1 to {MAX_NAME} characters.")
    capabilities = item.get("capabilities") or []
    caps.validate(capabilities)
    capabilities = [
        {acl: {"actions": list(body["actions"]), "scope": {"all": {}}}}
        for cap in capabilities
        for acl, body in cap.items()
    ]
    source_id = item.get("sourceId")
    if source_id == "":
        source_id = None
    if source_id is not None and (not isinstance(source_id, str) or len(source_id) > 255):
        raise InvalidRequest("sourceId must be a string of at most 255 characters.")
    members = item.get("members")
    if members is not None and members != ALL_USER_ACCOUNTS:
        if not isinstance(members, list) or not all(isinstance(m, str) and m for m in members):
            raise InvalidRequest(f"members must be a list of ids or {ALL_USER_ACCOUNTS!r}.")
        if len(members) > MAX_MEMBERS:
            raise InvalidRequest(f"A group has at most {MAX_MEMBERS} members.")
    if source_id is not None and members is not None:
        raise InvalidRequest("A group has either sourceId or members, not both.")
    return {"name": name, "capabilities": capabilities, "source_id": source_id, "members": members}


class Groups:
    def __init__(self, db: Database, access: Access) -> None:
        self.db = db
        self.access = access

    # -- API (capability checked) -----------------------------------------------------
    def create(
        self, project: str, caller: Principal, values: builtins.list[dict[str, Any]]
    ) -> builtins.list[GroupRow]:
        self.access.require(caller, project, "groupsAcl", "CREATE")
        return self.add(project, values)

    def list(self, project: str, caller: Principal, *, all_groups: bool) -> builtins.list[GroupRow]:
        if all_groups:
            self.access.require(caller, project, "groupsAcl", "LIST")
            with self.db.read() as s:
                return store.list_for_project(project, session=s)
        # one's own groups: any member of the project may see them
        self.access.require_project_member(caller, project)
        own = set(self.access.group_ids_of(caller, project))
        with self.db.read() as s:
            return [g for g in store.list_for_project(project, session=s) if g.id in own]

    def delete(self, project: str, caller: Principal, ids: builtins.list[int]) -> None:
        self.access.require(caller, project, "groupsAcl", "DELETE")
        self.remove(project, ids)

    # -- operator (no principal) --------------------------------------------------------
    def add(self, project: str, values: builtins.list[dict[str, Any]]) -> builtins.list[GroupRow]:
        checked = [_check_item(v) for v in values]
        now = now_ms()
        with self.db.write() as s:
            if project_store.get(project, session=s) is None:
                raise NotFound(f"Project {project!r} does not exist.")
            return [
                store.add(GroupRow(project=project, created_time=now, **c), session=s)
                for c in checked
            ]

    def list_all(self, project: str | None) -> builtins.list[GroupRow]:
        with self.db.read() as s:
            if project is None:
                return store.list_all(session=s)
            return store.list_for_project(project, session=s)

    def remove(self, project: str, ids: builtins.list[int]) -> None:
        with self.db.write() as s:
            rows = [store.get(project, i, session=s) for i in ids]
            missing = [{"id": i} for i, r in zip(ids, rows, strict=True) if r is None]
            if missing:
                raise NotFound("Groups not found.", missing=missing)
            for r in rows:
                s.delete(r)


def group_out(row: GroupRow) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "capabilities": row.capabilities,
        "isDeleted": False,
    }
    if row.source_id is not None:
        out["sourceId"] = row.source_id
    if row.members is not None:
        out["members"] = row.members
    return out
