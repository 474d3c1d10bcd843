"""/functions: create, list, byids, delete, limits, status/activate."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fnhost.api.deps import PrincipalDep, SystemDep, check_limit
from fnhost.api.models.common import ByIds, limit_of
from fnhost.api.models.functions import FunctionsCreate, FunctionsList
from fnhost.api.wire import drop_none, items
from fnhost.store.functions import FunctionRow

router = APIRouter(tags=["functions"])


def function_out(row: FunctionRow) -> dict[str, Any]:
    return drop_none(
        {
            "id": row.id,
            "externalId": row.external_id,
            "name": row.name,
            "description": row.description,
            "owner": row.owner,
            "status": row.status,
            "fileId": row.file_id,
            "functionPath": row.function_path,
            "createdTime": row.created_time,
            "secrets": {k: "***" for k in row.secret_names} if row.secret_names else None,
            "envVars": row.env_vars,
            "cpu": row.cpu,
            "memory": row.memory,
            "runtime": row.runtime,
            "runtimeVersion": row.runtime_version,
            "metadata": row.metadata_,
            "error": row.error,
            "lastCalled": row.last_called,
            "functionType": "classic",
            # fnhost extensions (the SDK ignores keys it does not know): the current version,
            # and why a newer one failed to build (docs/versions.md)
            "version": row.version,
            "versionError": row.version_error,
        }
    )


@router.post("/functions")
def create_functions(
    project: str, system: SystemDep, principal: PrincipalDep, body: FunctionsCreate
) -> dict[str, Any]:
    row = system.functions.create(project, principal, body.items[0].spec())
    return items([function_out(row)])


@router.post("/functions/list")
def list_functions(
    project: str, system: SystemDep, principal: PrincipalDep, body: FunctionsList | None = None
) -> dict[str, Any]:
    body = body or FunctionsList()
    limit = limit_of(body.limit, default=100, maximum=10_000)
    filt = body.filter.filter() if body.filter else None
    rows = system.functions.list(project, principal, limit=limit, filt=filt)
    return items([function_out(r) for r in rows])


@router.get("/functions")
def list_functions_get(project: str, system: SystemDep, principal: PrincipalDep, limit: int = 100) -> dict[str, Any]:
    limit = check_limit(limit, default=100, maximum=10_000)
    return items([function_out(r) for r in system.functions.list(project, principal, limit=limit)])


@router.post("/functions/byids")
def functions_by_ids(project: str, system: SystemDep, principal: PrincipalDep, body: ByIds) -> dict[str, Any]:
    rows = system.functions.by_ids(project, principal, body.identifiers(), body.ignore_unknown_ids)
    return items([function_out(r) for r in rows])


@router.post("/functions/delete")
def delete_functions(project: str, system: SystemDep, principal: PrincipalDep, body: ByIds) -> dict[str, Any]:
    system.functions.delete(project, principal, body.identifiers(), body.ignore_unknown_ids)
    return {}


@router.get("/functions/limits")
def limits(project: str, system: SystemDep, principal: PrincipalDep) -> dict[str, Any]:
    system.access.require(principal, project, "functionsAcl", "READ")
    lim = system.functions.limits()
    return {
        "timeoutMinutes": lim.timeout_minutes,
        "cpuCores": {"min": lim.cpu[0], "max": lim.cpu[1], "default": lim.cpu[2]},
        "memoryGb": {"min": lim.memory_gb[0], "max": lim.memory_gb[1], "default": lim.memory_gb[2]},
        "runtimes": lim.runtimes,
        "responseSizeMb": lim.response_size_mb,
    }


@router.get("/functions/status")
def functions_status(project: str, system: SystemDep, principal: PrincipalDep) -> dict[str, Any]:
    # fnhost projects need no activation: Functions are always on.
    system.access.require(principal, project, "functionsAcl", "READ")
    return {"status": "activated"}


@router.post("/functions/status")
def activate(project: str, system: SystemDep, principal: PrincipalDep) -> dict[str, Any]:
    system.access.require(principal, project, "functionsAcl", "WRITE")
    return {"status": "activated"}


@router.get("/functions/{function_id}")
def get_function(project: str, function_id: int, system: SystemDep, principal: PrincipalDep) -> dict[str, Any]:
    return function_out(system.functions.get(project, principal, function_id))
