"""/assets: create, list (with partitions), byids, update, delete, aggregate, search."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from fnhost.api.deps import (
    PrincipalDep,
    SystemDep,
    body_items,
    check_limit,
    ignore_unknown,
    int_cursor,
)
from fnhost.api.wire import drop_none, items
from fnhost.errors import InvalidRequest
from fnhost.services.assets import MAX_BATCH, AssetOut, Assets, parse_partition

router = APIRouter(tags=["assets"])


def asset_out(a: AssetOut) -> dict[str, Any]:
    row = a.row
    return drop_none(
        {
            "id": row.id,
            "externalId": row.external_id,
            "name": row.name,
            "parentId": row.parent_id,
            "parentExternalId": a.parent_external_id,
            "rootId": row.root_id,
            "description": row.description,
            "dataSetId": row.data_set_id,
            "metadata": row.metadata_ or {},
            "source": row.source,
            "labels": row.labels,
            "geoLocation": row.geo_location,
            "createdTime": row.created_time,
            "lastUpdatedTime": row.last_updated_time,
            "aggregates": a.aggregates,
        }
    )


def _object(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


def _bool(body: dict[str, Any], key: str) -> bool:
    value = body.get(key, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"{key} must be a boolean.")
    return value


@router.post("/assets")
def create_assets(
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    values = body_items(body, maximum=MAX_BATCH)
    return items([asset_out(a) for a in system.assets.create(project, principal, values)])


@router.post("/assets/list")
def list_assets(
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    body = _object(body)
    if body.get("advancedFilter") is not None:
        raise InvalidRequest("advancedFilter is not supported by this server; use filter.")
    if body.get("sort"):
        raise InvalidRequest("sort is not supported by this server; assets are listed in id order.")
    limit = check_limit(body.get("limit"), default=100, maximum=1000)
    page = system.assets.list_page(
        project,
        principal,
        filt=body.get("filter"),
        limit=limit,
        after_id=int_cursor(body.get("cursor")),
        partition=parse_partition(body.get("partition")),
        aggregated=Assets.aggregated_properties(body.get("aggregatedProperties")),
    )
    out = items([asset_out(a) for a in page.items])
    if page.next_cursor is not None:
        out["nextCursor"] = page.next_cursor
    return out


@router.get("/assets")
def list_assets_get(
    project: str,
    system: SystemDep,
    principal: PrincipalDep,
    limit: int = 100,
    cursor: str | None = None,
    partition: str | None = None,
) -> dict[str, Any]:
    limit = check_limit(limit, default=100, maximum=1000)
    page = system.assets.list_page(
        project,
        principal,
        filt={},
        limit=limit,
        after_id=int_cursor(cursor),
        partition=parse_partition(partition),
    )
    out = items([asset_out(a) for a in page.items])
    if page.next_cursor is not None:
        out["nextCursor"] = page.next_cursor
    return out


@router.get("/assets/{asset_id}")
def get_asset(
    project: str, asset_id: int, system: SystemDep, principal: PrincipalDep
) -> dict[str, Any]:
    (asset,) = system.assets.by_ids(project, principal, [{"id": asset_id}], ignore_unknown=False)
    return asset_out(asset)


@router.post("/assets/byids")
def assets_by_ids(
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    values = body_items(body, maximum=MAX_BATCH)
    rows = system.assets.by_ids(
        project,
        principal,
        values,
        ignore_unknown=ignore_unknown(body),
        aggregated=Assets.aggregated_properties(body.get("aggregatedProperties")),
    )
    return items([asset_out(a) for a in rows])


@router.post("/assets/update")
def update_assets(
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    values = body_items(body, maximum=MAX_BATCH)
    return items([asset_out(a) for a in system.assets.update(project, principal, values)])


@router.post("/assets/delete")
def delete_assets(
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    values = body_items(body, maximum=MAX_BATCH)
    system.assets.delete(
        project,
        principal,
        values,
        recursive=_bool(body, "recursive"),
        ignore_unknown=ignore_unknown(body),
    )
    return {}


@router.post("/assets/aggregate")
def aggregate_assets(
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    return items([{"count": system.assets.aggregate(project, principal, _object(body))}])


@router.post("/assets/search")
def search_assets(
    project: str, system: SystemDep, principal: PrincipalDep, body: Any = Body(None)
) -> dict[str, Any]:
    body = _object(body)
    limit = check_limit(body.get("limit"), default=100, maximum=1000)
    found = system.assets.search(
        project, principal, search=body.get("search"), filt=body.get("filter"), limit=limit
    )
    return items([asset_out(a) for a in found])
