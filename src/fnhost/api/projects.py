"""GET /api/v1/projects: the projects the caller has access to."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fnhost.api.deps import PrincipalDep, SystemDep
from fnhost.api.wire import items

router = APIRouter(tags=["identity"])


@router.get("/api/v1/projects")
def list_projects(system: SystemDep, principal: PrincipalDep) -> dict[str, Any]:
    """Only projects in which the caller holds a capability: others are not revealed."""
    return items([{"projectUrlName": p} for p in system.access.projects_of(principal)])
