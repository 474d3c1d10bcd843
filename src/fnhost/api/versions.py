"""/functions/{id}/versions: an fnhost extension of the Functions API (docs/versions.md).

    GET  …/functions/{id}/versions              the function's versions, newest first
    GET  …/functions/{id}/versions/{n}          one version
    POST …/functions/{id}/versions              new code: {"items": [{"fileId", …}]}
    POST …/functions/{id}/versions/rollback     {"version": n} (or {} for the one before)

Shapes as the rest of the API: ``{"items": […]}``, camelCase, the error envelope.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from fnhost.api.deps import PrincipalDep, SystemDep
from fnhost.api.models.versions import Rollback, VersionsCreate
from fnhost.api.wire import drop_none, items
from fnhost.store.functions import FunctionRow
from fnhost.store.versions import FunctionVersionRow

router = APIRouter(tags=["versions"])


def version_out(function: FunctionRow, row: FunctionVersionRow) -> dict[str, Any]:
    current = row.number == function.version
    return drop_none(
        {
            "functionId": row.function_id,
            "version": row.number,
            "current": current,
            # whether it can be rolled back to (an earlier Ready version, not retired)
            "rollbackable": not current and row.status == "Ready" and row.retired_time is None,
            "status": row.status,
            "error": row.error,
            "fileId": row.file_id,
            "codeSha256": row.code_sha256,
            "functionPath": row.function_path,
            "envVars": row.env_vars,
            "cpu": row.cpu,
            "memory": row.memory,
            "runtime": row.runtime,
            "runtimeVersion": row.runtime_version,
            "indexUrl": row.index_url,
            "extraIndexUrls": row.extra_index_urls,
            "createdTime": row.created_time,
            "createdBy": row.created_by,
            "readyTime": row.ready_time,
            "retiredTime": row.retired_time,
        }
    )


@router.get("/functions/{function_id}/versions")
def list_versions(project: str, function_id: int, system: SystemDep, principal: PrincipalDep) -> dict[str, Any]:
    function, rows = system.versions.list(project, principal, function_id)
    return items([version_out(function, r) for r in rows])


@router.get("/functions/{function_id}/versions/{number}")
def get_version(
    project: str, function_id: int, number: int, system: SystemDep, principal: PrincipalDep
) -> dict[str, Any]:
    function, row = system.versions.get(project, principal, function_id, number)
    return version_out(function, row)


@router.post("/functions/{function_id}/versions")
def deploy_version(
    project: str, function_id: int, system: SystemDep, principal: PrincipalDep, body: VersionsCreate
) -> JSONResponse:
    """201 with the new version (Queued); 200 with the current one and ``"unchanged": true``
    when the code and settings are those of the current (or a building) version."""
    deployed = system.versions.deploy(project, principal, function_id, body.items[0].spec())
    function, _ = system.versions.get(project, principal, function_id, deployed.version.number)
    out = items([version_out(function, deployed.version)])
    out["unchanged"] = not deployed.created
    return JSONResponse(out, status_code=201 if deployed.created else 200)


@router.post("/functions/{function_id}/versions/rollback")
def rollback(
    project: str, function_id: int, system: SystemDep, principal: PrincipalDep, body: Rollback | None = None
) -> dict[str, Any]:
    row = system.versions.rollback(project, principal, function_id, (body or Rollback()).version)
    function, row = system.versions.get(project, principal, function_id, row.number)
    return items([version_out(function, row)])
