"""/files: create with an upload URL, upload (PUT), byids, list, delete, downloadlink."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fnhost.api.deps import PrincipalDep, SystemDep, check_limit, get_principal, int_cursor
from fnhost.api.models.common import ByIds, limit_of
from fnhost.api.models.files import FilesList, FileWrite
from fnhost.api.services import Services
from fnhost.api.wire import drop_none, items
from fnhost.auth.capabilities import Principal
from fnhost.errors import InvalidRequest, PayloadTooLarge
from fnhost.services.files import FileFilter
from fnhost.store.files import FileRow

router = APIRouter(tags=["files"])


def file_out(row: FileRow) -> dict[str, Any]:
    return drop_none(
        {
            "id": row.id,
            "externalId": row.external_id,
            "name": row.name,
            "mimeType": row.mime_type,
            "directory": row.directory,
            "source": row.source,
            "dataSetId": row.data_set_id,
            "metadata": row.metadata_,
            "uploaded": row.uploaded,
            "uploadedTime": row.uploaded_time,
            "createdTime": row.created_time,
            "lastUpdatedTime": row.last_updated_time,
        }
    )


def _bool_query(value: str | None, name: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidRequest(f"{name} must be true or false.")


@router.post("/files")
def create_file(
    project: str,
    system: SystemDep,
    principal: PrincipalDep,
    body: FileWrite,
    overwrite: str | None = None,
) -> dict[str, Any]:
    row = system.files.create(project, principal, body.spec(), overwrite=_bool_query(overwrite, "overwrite"))
    out = file_out(row)
    out["uploadUrl"] = f"/api/v1/projects/{project}/files/upload/{row.id}?uploadToken={row.upload_token}"
    return out


@router.put("/files/upload/{file_id}")
async def upload_file(project: str, file_id: int, request: Request, uploadToken: str = "") -> dict[str, Any]:
    system = request.app.state.system
    principal = await run_in_threadpool(get_principal, request, request.headers.get("authorization"))
    limit = system.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Upload is larger than the limit of {limit} bytes.")
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115 - closed below
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            spool.close()
            raise PayloadTooLarge(f"Upload is larger than the limit of {limit} bytes.")
        spool.write(chunk)
    spool.seek(0)

    def chunks() -> Iterator[bytes]:
        while block := spool.read(1024 * 1024):
            yield block

    try:
        row = await run_in_threadpool(system.files.upload, project, principal, file_id, uploadToken, chunks())
    finally:
        spool.close()
    return file_out(row)


@router.post("/files/byids")
def files_by_ids(project: str, system: SystemDep, principal: PrincipalDep, body: ByIds) -> dict[str, Any]:
    rows = system.files.by_ids(project, principal, body.identifiers(), body.ignore_unknown_ids)
    return items([file_out(r) for r in rows])


def _list(
    system: Services,
    project: str,
    principal: Principal,
    limit: int | None,
    cursor: str | None,
    filt: FileFilter | None,
) -> dict[str, Any]:
    limit = limit_of(limit, default=100, maximum=1000)
    rows = system.files.list(project, principal, limit=limit, cursor=int_cursor(cursor), filt=filt)
    out: dict[str, Any] = items([file_out(r) for r in rows])
    if len(rows) == limit:
        out["nextCursor"] = str(rows[-1].id)
    return out


@router.post("/files/list")
def list_files(
    project: str, system: SystemDep, principal: PrincipalDep, body: FilesList | None = None
) -> dict[str, Any]:
    body = body or FilesList()
    filt = body.filter.filter() if body.filter else None
    return _list(system, project, principal, body.limit, body.cursor, filt)


@router.get("/files")
def list_files_get(
    project: str, system: SystemDep, principal: PrincipalDep, limit: int = 100, cursor: str | None = None
) -> dict[str, Any]:
    return _list(system, project, principal, check_limit(limit, default=100, maximum=1000), cursor, None)


@router.post("/files/delete")
def delete_files(project: str, system: SystemDep, principal: PrincipalDep, body: ByIds) -> dict[str, Any]:
    system.files.delete(project, principal, body.identifiers(), body.ignore_unknown_ids)
    return {}


@router.post("/files/downloadlink")
def download_links(project: str, system: SystemDep, principal: PrincipalDep, body: ByIds) -> dict[str, Any]:
    rows = system.files.by_ids(project, principal, body.identifiers(), False)
    return items(
        [
            drop_none(
                {
                    "id": r.id,
                    "externalId": r.external_id,
                    "downloadUrl": f"{system.public_url}/api/v1/projects/{project}/files/download/{r.id}",
                }
            )
            for r in rows
        ]
    )


@router.get("/files/download/{file_id}")
def download_file(project: str, file_id: int, system: SystemDep, principal: PrincipalDep) -> Response:
    row, content = system.files.download(project, principal, file_id)
    return Response(content, media_type=row.mime_type or "application/octet-stream")
