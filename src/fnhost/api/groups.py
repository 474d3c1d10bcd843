"""/groups: create, list (own or all), delete, in the CDF shape ``client.iam.groups`` uses."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from fnhost.api.deps import PrincipalDep, SystemDep, body_items
from fnhost.api.wire import items
from fnhost.errors import InvalidRequest
from fnhost.services.groups import group_out

router = APIRouter(tags=["groups"])


@router.post("/groups")
def create_groups(
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    values = body_items(body)
    rows = system.groups.create(project, principal, values)
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
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    values = body.get("items") if isinstance(body, dict) else None
    if not isinstance(values, list) or not values:
        raise InvalidRequest("The body must be an object with a non-empty 'items' list of ids.")
    # the SDK sends bare ids ({"items": [1, 2]}); {"id": n} objects are accepted too
    ids: list[int] = []
    for v in values:
        value = v.get("id") if isinstance(v, dict) else v
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidRequest("Each item must be a group id (an integer).")
        ids.append(value)
    system.groups.delete(project, principal, ids)
    return {}
