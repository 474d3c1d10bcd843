"""/assets: create, list (with partitions), byids, update, delete, aggregate, search."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from fnhost.api.deps import PrincipalDep, SystemDep, check_limit, int_cursor
from fnhost.api.models.assets import (
    AssetsAggregate,
    AssetsByIds,
    AssetsCreate,
    AssetsDelete,
    AssetsList,
    AssetsSearch,
    AssetsUpdate,
    filter_of,
)
from fnhost.api.models.common import limit_of
from fnhost.api.wire import drop_none, items
from fnhost.errors import InvalidRequest
from fnhost.services.assets import AssetOut, parse_partition
from fnhost.services.identifiers import Identifier

router = APIRouter(tags=["assets"])


def aggregates_out(a: AssetOut) -> dict[str, Any] | None:
    if not a.aggregated:
        return None
    out: dict[str, Any] = {}
    if "child_count" in a.aggregated:
        out["childCount"] = a.child_count or 0
    if "depth" in a.aggregated:
        out["depth"] = a.row.depth
    if "path" in a.aggregated:
        out["path"] = [{"id": i} for i in a.path_ids]
    return out


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
            "aggregates": aggregates_out(a),
        }
    )


@router.post("/assets")
def create_assets(
    project: str, system: SystemDep, principal: PrincipalDep, body: AssetsCreate
) -> dict[str, Any]:
    specs = [a.spec() for a in body.items]
    return items([asset_out(a) for a in system.assets.create(project, principal, specs)])


@router.post("/assets/list")
def list_assets(
    project: str, system: SystemDep, principal: PrincipalDep, body: AssetsList | None = None
) -> dict[str, Any]:
    body = body or AssetsList()
    if body.advanced_filter is not None:
        raise InvalidRequest("advancedFilter is not supported by this server; use filter.")
    if body.sort:
        raise InvalidRequest("sort is not supported by this server; assets are listed in id order.")
    limit = limit_of(body.limit, default=100, maximum=1000)
    page = system.assets.list_page(
        project,
        principal,
        filt=filter_of(body.filter),
        limit=limit,
        after_id=int_cursor(body.cursor),
        partition=parse_partition(body.partition),
        aggregated=body.aggregated(),
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
        filt=None,
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
    (asset,) = system.assets.by_ids(project, principal, [Identifier(id=asset_id)], ignore_unknown=False)
    return asset_out(asset)


@router.post("/assets/byids")
def assets_by_ids(
    project: str, system: SystemDep, principal: PrincipalDep, body: AssetsByIds
) -> dict[str, Any]:
    rows = system.assets.by_ids(
        project,
        principal,
        body.identifiers(),
        ignore_unknown=body.ignore_unknown_ids,
        aggregated=body.aggregated(),
    )
    return items([asset_out(a) for a in rows])


@router.post("/assets/update")
def update_assets(
    project: str, system: SystemDep, principal: PrincipalDep, body: AssetsUpdate
) -> dict[str, Any]:
    changes = [i.change() for i in body.items]
    return items([asset_out(a) for a in system.assets.update(project, principal, changes)])


@router.post("/assets/delete")
def delete_assets(
    project: str, system: SystemDep, principal: PrincipalDep, body: AssetsDelete
) -> dict[str, Any]:
    system.assets.delete(
        project,
        principal,
        body.identifiers(),
        recursive=body.recursive,
        ignore_unknown=body.ignore_unknown_ids,
    )
    return {}


@router.post("/assets/aggregate")
def aggregate_assets(
    project: str, system: SystemDep, principal: PrincipalDep, body: AssetsAggregate | None = None
) -> dict[str, Any]:
    body = body or AssetsAggregate()
    if body.aggregate != "count":
        raise InvalidRequest(
            f"Asset aggregate {body.aggregate!r} is not supported by this server; use 'count'."
        )
    if body.advanced_filter is not None:
        raise InvalidRequest("advancedFilter is not supported by this server; use filter.")
    not_null = [p.property[0] for p in body.properties or []]
    count = system.assets.count(project, principal, filt=filter_of(body.filter), not_null=not_null)
    return items([{"count": count}])


@router.post("/assets/search")
def search_assets(
    project: str, system: SystemDep, principal: PrincipalDep, body: AssetsSearch | None = None
) -> dict[str, Any]:
    body = body or AssetsSearch()
    limit = limit_of(body.limit, default=100, maximum=1000)
    terms = body.search.terms() if body.search else []
    found = system.assets.search(
        project, principal, terms=terms, filt=filter_of(body.filter), limit=limit
    )
    return items([asset_out(a) for a in found])
