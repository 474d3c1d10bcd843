"""/groups: create, list (own or all), delete, in the CDF shape ``client.iam.groups`` uses."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fnhost.api.deps import PrincipalDep, SystemDep
from fnhost.api.models.groups import GroupsCreate, GroupsDelete
from fnhost.api.wire import items
from fnhost.errors import InvalidRequest
from fnhost.store.groups import GroupRow

router = APIRouter(tags=["groups"])


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
    if row.metadata_:
        out["metadata"] = row.metadata_
    return out


@router.post("/groups")
def create_groups(
    project: str, system: SystemDep, principal: PrincipalDep, body: GroupsCreate
) -> dict[str, Any]:
    rows = system.groups.create(project, principal, [g.spec() for g in body.items])
    return items([group_out(r) for r in rows])


@router.get("/groups")
def list_groups(
    project: str, system: SystemDep, principal: PrincipalDep, all: str = "false"
) -> dict[str, Any]:
    flag = all.lower()
    if flag not in ("true", "false"):
        raise InvalidRequest("all must be true or false.")
    rows = system.groups.list(project, principal, all_groups=flag == "true")
    return items([group_out(r) for r in rows])


@router.post("/groups/delete")
def delete_groups(
    project: str, system: SystemDep, principal: PrincipalDep, body: GroupsDelete
) -> dict[str, Any]:
    # the SDK sends bare ids ({"items": [1, 2]}); {"id": n} objects are accepted too
    system.groups.delete(project, principal, body.ids())
    return {}
