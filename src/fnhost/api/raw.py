"""/raw/dbs: databases, tables, rows (insert, list, cursors, retrieve, delete).

Database and table names and row keys are path segments URL-encoded by the SDK
(``quote(safe="")``), so a name may contain an encoded ``/``. The routes below therefore
split the raw (still encoded) request path themselves and decode each segment.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Body, Request

from fnhost.api.deps import PrincipalDep, SystemDep, check_limit
from fnhost.api.models.raw import DatabasesDelete, Keys, Names, Rows
from fnhost.api.wire import items, parse
from fnhost.errors import InvalidRequest, NotFound
from fnhost.store.raw import RawRow

router = APIRouter(tags=["raw"])

LIST_DEFAULT = 25
LIST_MAX = 1000
ROWS_MAX = 10_000


def row_out(row: RawRow, columns: list[str] | None = None) -> dict[str, Any]:
    cols = (
        row.columns if columns is None else {k: v for k, v in row.columns.items() if k in columns}
    )
    return {"key": row.key, "columns": cols, "lastUpdatedTime": row.last_updated_time}


def _segments(request: Request, rest: str) -> list[str]:
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        parts = raw.decode("latin-1").split("/")
        # ['', 'api', 'v1', 'projects', '<project>', 'raw', 'dbs', ...]
        if len(parts) > 7 and parts[5:7] == ["raw", "dbs"]:
            return [unquote(p) for p in parts[7:]]
    return rest.split("/")


def _query_int(request: Request, key: str) -> int | None:
    value = request.query_params.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(f"{key} must be an integer, got {value!r}.") from None


def _query_bool(request: Request, key: str) -> bool:
    value = request.query_params.get(key)
    if value is None:
        return False
    if value.lower() not in ("true", "false"):
        raise InvalidRequest(f"{key} must be true or false, got {value!r}.")
    return value.lower() == "true"


def _columns(request: Request) -> list[str] | None:
    value = request.query_params.get("columns")
    if value is None or value == "":
        return None
    return [c for c in value.split(",") if c]


def _limit(request: Request, maximum: int) -> int:
    return check_limit(_query_int(request, "limit"), default=LIST_DEFAULT, maximum=maximum)


def _page(values: list[dict[str, Any]], cursor: str | None) -> dict[str, Any]:
    out = items(values)
    if cursor is not None:
        out["nextCursor"] = cursor
    return out


def _not_found() -> NotFound:
    return NotFound("Not found: no such endpoint.")


@router.get("/raw/dbs")
def list_databases(
    project: str, request: Request, system: SystemDep, principal: PrincipalDep
) -> dict[str, Any]:
    rows, cursor = system.raw.list_databases(
        project,
        principal,
        limit=_limit(request, LIST_MAX),
        cursor=request.query_params.get("cursor"),
    )
    return _page([{"name": r.name, "createdTime": r.created_time} for r in rows], cursor)


@router.post("/raw/dbs")
def create_databases(
    project: str, system: SystemDep, principal: PrincipalDep, body: Names
) -> dict[str, Any]:
    rows = system.raw.create_databases(project, principal, body.names())
    return items([{"name": r.name, "createdTime": r.created_time} for r in rows])


@router.post("/raw/dbs/delete")
def delete_databases(
    project: str, system: SystemDep, principal: PrincipalDep, body: DatabasesDelete
) -> dict[str, Any]:
    system.raw.delete_databases(project, principal, body.names(), recursive=body.recursive)
    return {}


@router.get("/raw/dbs/{rest:path}")
def raw_get(
    project: str, rest: str, request: Request, system: SystemDep, principal: PrincipalDep
) -> dict[str, Any]:
    seg = _segments(request, rest)
    raw = system.raw
    if len(seg) == 2 and seg[1] == "tables":
        rows, cursor = raw.list_tables(
            project,
            principal,
            seg[0],
            limit=_limit(request, LIST_MAX),
            cursor=request.query_params.get("cursor"),
        )
        return _page([{"name": r.name, "createdTime": r.created_time} for r in rows], cursor)
    if len(seg) == 4 and seg[1] == "tables" and seg[3] == "rows":
        columns = _columns(request)
        page = raw.list_rows(
            project,
            principal,
            seg[0],
            seg[2],
            limit=_limit(request, ROWS_MAX),
            cursor=request.query_params.get("cursor"),
            min_updated=_query_int(request, "minLastUpdatedTime"),
            max_updated=_query_int(request, "maxLastUpdatedTime"),
        )
        return _page([row_out(r, columns) for r in page.rows], page.next_cursor)
    if len(seg) == 4 and seg[1] == "tables" and seg[3] == "cursors":
        cursors = raw.cursors(
            project,
            principal,
            seg[0],
            seg[2],
            number=_query_int(request, "numberOfCursors") or 10,
            min_updated=_query_int(request, "minLastUpdatedTime"),
            max_updated=_query_int(request, "maxLastUpdatedTime"),
        )
        return items(cursors)
    if len(seg) == 5 and seg[1] == "tables" and seg[3] == "rows":
        return row_out(raw.get_row(project, principal, seg[0], seg[2], seg[4]), _columns(request))
    raise _not_found()


@router.post("/raw/dbs/{rest:path}")
def raw_post(
    project: str,
    rest: str,
    request: Request,
    system: SystemDep,
    principal: PrincipalDep,
    body: Any = Body(None),  # one path for four bodies: each branch parses its own model
) -> dict[str, Any]:
    seg = _segments(request, rest)
    raw = system.raw
    if len(seg) == 2 and seg[1] == "tables":
        rows = raw.create_tables(
            project,
            principal,
            seg[0],
            parse(Names, body).names(),
            ensure_parent=_query_bool(request, "ensureParent"),
        )
        return items([{"name": r.name, "createdTime": r.created_time} for r in rows])
    if len(seg) == 3 and seg[1] == "tables" and seg[2] == "delete":
        raw.delete_tables(project, principal, seg[0], parse(Names, body).names())
        return {}
    if len(seg) == 4 and seg[1] == "tables" and seg[3] == "rows":
        raw.insert_rows(
            project,
            principal,
            seg[0],
            seg[2],
            parse(Rows, body).rows(),
            ensure_parent=_query_bool(request, "ensureParent"),
        )
        return {}
    if len(seg) == 5 and seg[1] == "tables" and seg[3] == "rows" and seg[4] == "delete":
        raw.delete_rows(project, principal, seg[0], seg[2], parse(Keys, body).keys())
        return {}
    raise _not_found()
