"""Assets: validation, hierarchy rules (parents, roots, cycles) and atomic batches.

Every write is one transaction: the whole batch is validated and applied, or nothing
is written. Limits follow the CDF assets API.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from fnhost.auth.capabilities import Principal
from fnhost.clock import now_ms
from fnhost.errors import Duplicated, InvalidRequest, NotFound
from fnhost.services.access import Access
from fnhost.services.files import identifier_of
from fnhost.store import assets as store
from fnhost.store.assets import AssetQuery, AssetRow
from fnhost.store.db import Database

MAX_BATCH = 1000
MAX_NAME = 140
MAX_EXTERNAL_ID = 255
MAX_DESCRIPTION = 500
MAX_SOURCE = 128
MAX_METADATA_PAIRS = 256
MAX_METADATA_KEY_BYTES = 128
MAX_METADATA_VALUE_BYTES = 10240
MAX_METADATA_BYTES = 10240
MAX_LABELS = 10
MAX_PARTITIONS = 10
MAX_SUBTREE = 100_000
MAX_SUBTREE_ROOTS = 100
MAX_PARENT_IDS = 100
AGGREGATED_PROPERTIES = ("childCount", "path", "depth")
PARTITION = re.compile(r"^(\d+)/(\d+)$")

FILTER_KEYS = {
    "name",
    "parentIds",
    "parentExternalIds",
    "assetSubtreeIds",
    "dataSetIds",
    "metadata",
    "source",
    "createdTime",
    "lastUpdatedTime",
    "root",
    "externalIdPrefix",
}
CREATE_KEYS = {
    "externalId",
    "name",
    "parentId",
    "parentExternalId",
    "description",
    "dataSetId",
    "metadata",
    "source",
    "labels",
    "geoLocation",
}
# update property -> the operations it accepts
UPDATE_OPS: dict[str, tuple[str, ...]] = {
    "externalId": ("set", "setNull"),
    "name": ("set",),
    "description": ("set", "setNull"),
    "dataSetId": ("set", "setNull"),
    "metadata": ("set", "add", "remove"),
    "source": ("set", "setNull"),
    "parentId": ("set",),
    "parentExternalId": ("set",),
    "labels": ("set", "add", "remove"),
    "geoLocation": ("set", "setNull"),
}


@dataclass
class AssetOut:
    """An asset as served: the row plus what is derived from its neighbours."""

    row: AssetRow
    parent_external_id: str | None = None
    aggregates: dict[str, Any] | None = None


@dataclass
class Page:
    items: list[AssetOut]
    next_cursor: str | None


@dataclass
class _NewAsset:
    index: int
    fields: dict[str, Any]
    parent_id: int | None = None
    parent_external_id: str | None = None
    children: list[int] = field(default_factory=list)


# -- validation of single values -------------------------------------------------------


def _str(value: Any, key: str, maximum: int, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str) or (not allow_empty and not value) or len(value) > maximum:
        low = 0 if allow_empty else 1
        raise InvalidRequest(
            f"{key} must be a string of {low} to {maximum} characters, got {_show(value)}."
        )
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _int_id(value: Any, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest(f"{key} must be a positive integer, got {_show(value)}.")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("name is required: a non-blank string.")
    if len(value) > MAX_NAME:
        raise InvalidRequest(f"name must be at most {MAX_NAME} characters, got {len(value)}.")
    return value


def _metadata(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidRequest("metadata must be an object of string keys to string values.")
    if len(value) > MAX_METADATA_PAIRS:
        raise InvalidRequest(
            f"metadata may have at most {MAX_METADATA_PAIRS} keys, got {len(value)}."
        )
    total = 0
    for k, v in value.items():
        if not isinstance(v, str):
            raise InvalidRequest(f"metadata values must be strings; {k!r} has {_show(v)}.")
        kb, vb = len(k.encode()), len(v.encode())
        if not k or kb > MAX_METADATA_KEY_BYTES:
            raise InvalidRequest(
                f"metadata keys must be 1 to {MAX_METADATA_KEY_BYTES} bytes; {_show(k)} is {kb}."
            )
        if vb > MAX_METADATA_VALUE_BYTES:
            raise InvalidRequest(
                f"metadata value of {k!r} is {vb} bytes; at most {MAX_METADATA_VALUE_BYTES}."
            )
        total += kb + vb
    if total > MAX_METADATA_BYTES:
        raise InvalidRequest(f"metadata is {total} bytes in total; at most {MAX_METADATA_BYTES}.")
    return value


def _labels(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise InvalidRequest('labels must be a list of {"externalId": ...} objects.')
    out: list[dict[str, str]] = []
    for label in value:
        if not isinstance(label, dict) or not isinstance(label.get("externalId"), str):
            raise InvalidRequest('Each label must be an object {"externalId": "<string>"}.')
        xid = _str(label["externalId"], "label externalId", MAX_EXTERNAL_ID, allow_empty=False)
        if {"externalId": xid} not in out:
            out.append({"externalId": xid})
    if len(out) > MAX_LABELS:
        raise InvalidRequest(f"An asset may have at most {MAX_LABELS} labels, got {len(out)}.")
    return out


def _geo(value: Any) -> dict[str, Any]:
    if (
        not isinstance(value, dict)
        or value.get("type") != "Feature"
        or not isinstance(value.get("geometry"), dict)
        or not isinstance(value["geometry"].get("type"), str)
    ):
        raise InvalidRequest(
            'geoLocation must be a GeoJSON Feature: {"type": "Feature", "geometry": {...}}.'
        )
    return value


def _field(key: str, value: Any) -> Any:
    """Validate the value of one settable property."""
    if key == "externalId":
        return _str(value, "externalId", MAX_EXTERNAL_ID, allow_empty=False)
    if key == "name":
        return _name(value)
    if key == "description":
        return _str(value, "description", MAX_DESCRIPTION)
    if key == "source":
        return _str(value, "source", MAX_SOURCE)
    if key == "dataSetId":
        return _int_id(value, "dataSetId")
    if key == "metadata":
        return _metadata(value)
    if key == "labels":
        return _labels(value)
    if key == "geoLocation":
        return _geo(value)
    if key == "parentId":
        return _int_id(value, "parentId")
    if key == "parentExternalId":
        return _str(value, "parentExternalId", MAX_EXTERNAL_ID, allow_empty=False)
    raise InvalidRequest(f"Unknown asset property {key!r}.")


def _validate_create(item: dict[str, Any], index: int) -> _NewAsset:
    unknown = sorted(set(item) - CREATE_KEYS - {"id"})
    if unknown:
        raise InvalidRequest(
            f"items[{index}]: unknown propert{'y' if len(unknown) == 1 else 'ies'} {unknown}."
        )
    if item.get("id") is not None:
        raise InvalidRequest(f"items[{index}]: id is assigned by the server and must not be given.")
    if "name" not in item or item["name"] is None:
        raise InvalidRequest(f"items[{index}]: name is required.")
    fields: dict[str, Any] = {}
    for key, value in item.items():
        if key == "id" or value is None:
            continue
        try:
            fields[key] = _field(key, value)
        except InvalidRequest as exc:
            raise InvalidRequest(f"items[{index}]: {exc.message}") from None
    if "parentId" in fields and "parentExternalId" in fields:
        raise InvalidRequest(f"items[{index}]: give parentId or parentExternalId, not both.")
    return _NewAsset(
        index=index,
        fields=fields,
        parent_id=fields.pop("parentId", None),
        parent_external_id=fields.pop("parentExternalId", None),
    )


def _apply_fields(row: AssetRow, fields: dict[str, Any]) -> None:
    for key, value in fields.items():
        attr = {
            "externalId": "external_id",
            "dataSetId": "data_set_id",
            "metadata": "metadata_",
            "geoLocation": "geo_location",
        }.get(key, key)
        setattr(row, attr, value)


def _place(row: AssetRow, parent: AssetRow | None) -> None:
    """Set the hierarchy columns of ``row`` (its id known) under ``parent``."""
    if parent is None:
        row.parent_id = None
        row.root_id = row.id
        row.depth = 0
        row.path = f"/{row.id}/"
    else:
        row.parent_id = parent.id
        row.root_id = parent.root_id
        row.depth = parent.depth + 1
        row.path = f"{parent.path}{row.id}/"


def parse_partition(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    match = PARTITION.match(value) if isinstance(value, str) else None
    if not match:
        raise InvalidRequest(
            f"partition must look like 'i/N' (for example '1/3'), got {_show(value)}."
        )
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= count <= MAX_PARTITIONS:
        raise InvalidRequest(f"At most {MAX_PARTITIONS} partitions are allowed, got {count}.")
    if not 1 <= index <= count:
        raise InvalidRequest(f"partition index must be between 1 and {count}, got {index}.")
    return index - 1, count


def _range(value: Any, key: str) -> tuple[int | None, int | None]:
    if not isinstance(value, dict) or set(value) - {"min", "max"}:
        raise InvalidRequest(f'{key} must be an object {{"min": ms, "max": ms}}.')
    lo, hi = value.get("min"), value.get("max")
    for bound in (lo, hi):
        if bound is not None and (
            not isinstance(bound, int) or isinstance(bound, bool) or bound < 0
        ):
            raise InvalidRequest(
                f"{key}.min and {key}.max must be non-negative integers (ms since epoch)."
            )
    return lo, hi


def _id_list(value: Any, key: str, maximum: int) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"{key} must be a non-empty list.")
    if len(value) > maximum:
        raise InvalidRequest(f"{key} may have at most {maximum} entries, got {len(value)}.")
    return [identifier_of(v) if isinstance(v, dict) else identifier_of({}) for v in value]


class Assets:
    def __init__(self, db: Database, access: Access) -> None:
        self.db = db
        self.access = access

    # -- reading -----------------------------------------------------------------------------
    def _query(self, project: str, filt: Any, *, session: Session) -> AssetQuery:
        if filt is None:
            filt = {}
        if not isinstance(filt, dict):
            raise InvalidRequest("filter must be an object.")
        unknown = sorted(set(filt) - FILTER_KEYS - {"labels", "geoLocation"})
        if unknown:
            raise InvalidRequest(
                f"Unknown asset filter propert{'y' if len(unknown) == 1 else 'ies'} {unknown}."
            )
        for key in ("labels", "geoLocation"):
            if filt.get(key) is not None:
                raise InvalidRequest(f"Filtering assets by {key} is not supported by this server.")
        q = AssetQuery()
        if filt.get("name") is not None:
            q.name = _str(filt["name"], "filter.name", MAX_NAME)
        if filt.get("source") is not None:
            q.source = _str(filt["source"], "filter.source", MAX_SOURCE)
        if filt.get("externalIdPrefix") is not None:
            q.external_id_prefix = _str(
                filt["externalIdPrefix"], "filter.externalIdPrefix", MAX_EXTERNAL_ID
            )
        if filt.get("metadata") is not None:
            q.metadata = _metadata(filt["metadata"])
        if filt.get("root") is not None:
            if not isinstance(filt["root"], bool):
                raise InvalidRequest("filter.root must be true or false.")
            q.root = filt["root"]
        if filt.get("createdTime") is not None:
            q.created_min, q.created_max = _range(filt["createdTime"], "filter.createdTime")
        if filt.get("lastUpdatedTime") is not None:
            q.updated_min, q.updated_max = _range(filt["lastUpdatedTime"], "filter.lastUpdatedTime")
        parent_ids: list[int] | None = None
        if filt.get("parentIds") is not None:
            values = filt["parentIds"]
            if not isinstance(values, list) or len(values) > MAX_PARENT_IDS:
                raise InvalidRequest(
                    f"filter.parentIds must be a list of at most {MAX_PARENT_IDS} ids."
                )
            parent_ids = [_int_id(v, "filter.parentIds[]") for v in values]
        if filt.get("parentExternalIds") is not None:
            values = filt["parentExternalIds"]
            if not isinstance(values, list) or len(values) > MAX_PARENT_IDS:
                raise InvalidRequest(
                    f"filter.parentExternalIds must be a list of at most {MAX_PARENT_IDS} strings."
                )
            xids = [_str(v, "filter.parentExternalIds[]", MAX_EXTERNAL_ID) for v in values]
            found = store.by_external_ids(project, xids, session=session)
            parent_ids = [*(parent_ids or []), *(r.id for r in found.values())]
        q.parent_ids = parent_ids
        if filt.get("dataSetIds") is not None:
            idents = _id_list(filt["dataSetIds"], "filter.dataSetIds", MAX_PARENT_IDS)
            if any("externalId" in i for i in idents):
                raise InvalidRequest(
                    "filter.dataSetIds: data set external ids are not supported; use ids."
                )
            q.data_set_ids = [i["id"] for i in idents]
        if filt.get("assetSubtreeIds") is not None:
            idents = _id_list(filt["assetSubtreeIds"], "filter.assetSubtreeIds", MAX_SUBTREE_ROOTS)
            rows = self._resolve(project, idents, session=session, ignore_unknown=False)
            q.subtree_paths = [r.path for r in rows]
            size = store.count(project, AssetQuery(subtree_paths=q.subtree_paths), session=session)
            if size > MAX_SUBTREE:
                raise InvalidRequest(
                    f"The given subtrees hold {size} assets; at most {MAX_SUBTREE} are allowed."
                )
        return q

    def _resolve(
        self, project: str, idents: list[dict[str, Any]], *, session: Session, ignore_unknown: bool
    ) -> list[AssetRow]:
        """Rows for identifiers, in order, each once; NotFound lists the unknown ones."""
        by_id = store.by_ids(project, [i["id"] for i in idents if "id" in i], session=session)
        by_xid = store.by_external_ids(
            project, [i["externalId"] for i in idents if "externalId" in i], session=session
        )
        rows: list[AssetRow] = []
        seen: set[int] = set()
        missing: list[dict[str, Any]] = []
        for ident in idents:
            row = by_id.get(ident["id"]) if "id" in ident else by_xid.get(ident["externalId"])
            if row is None:
                if ident not in missing:
                    missing.append(ident)
            elif row.id not in seen:
                seen.add(row.id)
                rows.append(row)
        if missing and not ignore_unknown:
            raise NotFound("Assets not found.", missing=missing)
        return rows

    def _out(
        self,
        project: str,
        rows: Sequence[AssetRow],
        *,
        session: Session,
        aggregated: Sequence[str] = (),
    ) -> list[AssetOut]:
        parent_ids = [r.parent_id for r in rows if r.parent_id is not None]
        parent_xids = store.external_ids_of(project, parent_ids, session=session)
        counts = (
            store.child_counts(project, [r.id for r in rows], session=session)
            if "childCount" in aggregated
            else {}
        )
        out = []
        for r in rows:
            aggregates: dict[str, Any] | None = None
            if aggregated:
                aggregates = {}
                if "childCount" in aggregated:
                    aggregates["childCount"] = counts.get(r.id, 0)
                if "depth" in aggregated:
                    aggregates["depth"] = r.depth
                if "path" in aggregated:
                    aggregates["path"] = [{"id": int(p)} for p in r.path.strip("/").split("/")]
            parent_xid = parent_xids.get(r.parent_id) if r.parent_id is not None else None
            out.append(AssetOut(r, parent_xid, aggregates))
        return out

    @staticmethod
    def aggregated_properties(value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list) or any(v not in AGGREGATED_PROPERTIES for v in value):
            raise InvalidRequest(
                f"aggregatedProperties must be a list of {', '.join(AGGREGATED_PROPERTIES)}."
            )
        return list(value)

    def by_ids(
        self,
        project: str,
        caller: Principal,
        idents: list[dict[str, Any]],
        *,
        ignore_unknown: bool,
        aggregated: Sequence[str] = (),
    ) -> list[AssetOut]:
        self.access.require(caller, project, "assetsAcl", "READ")
        idents = [identifier_of(i) for i in idents]
        with self.db.read() as s:
            rows = self._resolve(project, idents, session=s, ignore_unknown=ignore_unknown)
            return self._out(project, rows, session=s, aggregated=aggregated)

    def list_page(
        self,
        project: str,
        caller: Principal,
        *,
        filt: Any,
        limit: int,
        after_id: int,
        partition: tuple[int, int] | None = None,
        aggregated: Sequence[str] = (),
    ) -> Page:
        self.access.require(caller, project, "assetsAcl", "READ")
        with self.db.read() as s:
            q = self._query(project, filt, session=s)
            q.partition = partition
            rows = store.list_page(project, q, session=s, limit=limit, after_id=after_id)
            items = self._out(project, rows, session=s, aggregated=aggregated)
        next_cursor = str(rows[-1].id) if len(rows) == limit else None
        return Page(items, next_cursor)

    def search(
        self, project: str, caller: Principal, *, search: Any, filt: Any, limit: int
    ) -> list[AssetOut]:
        self.access.require(caller, project, "assetsAcl", "READ")
        if search is None:
            search = {}
        if not isinstance(search, dict) or set(search) - {"name", "description", "query"}:
            raise InvalidRequest("search must be an object with name, description and/or query.")
        terms: list[str] = []
        for key in ("name", "description", "query"):
            value = search.get(key)
            if value is not None:
                terms.extend(_str(value, f"search.{key}", 1000).split())
        with self.db.read() as s:
            q = self._query(project, filt, session=s)
            rows = store.search(project, q, terms, session=s, limit=limit)
            return self._out(project, rows, session=s)

    def aggregate(self, project: str, caller: Principal, body: dict[str, Any]) -> int:
        self.access.require(caller, project, "assetsAcl", "READ")
        kind = body.get("aggregate", "count")
        if kind != "count":
            raise InvalidRequest(
                f"Asset aggregate {kind!r} is not supported by this server; use 'count'."
            )
        if body.get("advancedFilter") is not None:
            raise InvalidRequest("advancedFilter is not supported by this server; use filter.")
        not_null: list[str] = []
        for prop in body.get("properties") or []:
            path = prop.get("property") if isinstance(prop, dict) else None
            if not (
                isinstance(path, list) and len(path) == 1 and path[0] in store.NULLABLE_COLUMNS
            ):
                raise InvalidRequest(
                    f"Counting by property {_show(path)} is not supported; use one of "
                    f"{', '.join(store.NULLABLE_COLUMNS)}."
                )
            not_null.append(path[0])
        with self.db.read() as s:
            q = self._query(project, body.get("filter"), session=s)
            q.not_null = not_null
            return store.count(project, q, session=s)

    # -- writing -----------------------------------------------------------------------------
    def create(
        self, project: str, caller: Principal, items: list[dict[str, Any]]
    ) -> list[AssetOut]:
        self.access.require(caller, project, "assetsAcl", "WRITE")
        if len(items) > MAX_BATCH:
            raise InvalidRequest(f"At most {MAX_BATCH} assets per request, got {len(items)}.")
        news = [_validate_create(item, i) for i, item in enumerate(items)]
        xids = [n.fields["externalId"] for n in news if "externalId" in n.fields]
        dup_in_batch = sorted(x for x, c in Counter(xids).items() if c > 1)
        by_xid = {n.fields["externalId"]: n for n in news if "externalId" in n.fields}
        now = now_ms()
        with self.db.write() as s:
            taken = store.by_external_ids(project, xids, session=s)
            duplicated = sorted(set(dup_in_batch) | set(taken))
            if duplicated:
                raise Duplicated(
                    f"Asset externalId(s) already in use{' or repeated in the request' if dup_in_batch else ''}.",
                    duplicated=[{"externalId": x} for x in duplicated],
                )
            parents_by_id = store.by_ids(
                project, [n.parent_id for n in news if n.parent_id], session=s
            )
            outside = [
                n.parent_external_id
                for n in news
                if n.parent_external_id and n.parent_external_id not in by_xid
            ]
            parents_by_xid = store.by_external_ids(project, outside, session=s)
            missing: list[dict[str, Any]] = []
            for n in news:
                if n.parent_id is not None and n.parent_id not in parents_by_id:
                    ident: dict[str, Any] = {"id": n.parent_id}
                elif (
                    n.parent_external_id is not None
                    and n.parent_external_id not in by_xid
                    and (n.parent_external_id not in parents_by_xid)
                ):
                    ident = {"externalId": n.parent_external_id}
                else:
                    continue
                if ident not in missing:
                    missing.append(ident)
            if missing:
                raise NotFound("Parent asset(s) not found.", missing=missing)
            order = self._creation_order(news, by_xid)
            rows: dict[int, AssetRow] = {}
            for n in news:
                row = AssetRow(project=project, created_time=now, last_updated_time=now)
                _apply_fields(row, n.fields)
                s.add(row)
                rows[n.index] = row
            s.flush()  # ids assigned
            for n in order:
                parent: AssetRow | None = None
                if n.parent_id is not None:
                    parent = parents_by_id[n.parent_id]
                elif n.parent_external_id is not None:
                    in_batch = by_xid.get(n.parent_external_id)
                    parent = (
                        rows[in_batch.index] if in_batch else parents_by_xid[n.parent_external_id]
                    )
                _place(rows[n.index], parent)
            s.flush()
            created = [rows[n.index] for n in news]
            return self._out(project, created, session=s)

    @staticmethod
    def _creation_order(news: list[_NewAsset], by_xid: dict[str, _NewAsset]) -> list[_NewAsset]:
        """Parents before children; a cycle inside the batch is a clear error."""
        children: dict[int, list[_NewAsset]] = {n.index: [] for n in news}
        roots: list[_NewAsset] = []
        for n in news:
            parent = by_xid.get(n.parent_external_id) if n.parent_external_id else None
            if parent is None:
                roots.append(n)
            else:
                children[parent.index].append(n)
        order: list[_NewAsset] = []
        stack = list(reversed(roots))
        while stack:
            n = stack.pop()
            order.append(n)
            stack.extend(reversed(children[n.index]))
        if len(order) < len(news):
            placed = {n.index for n in order}
            cyclic = [n.fields.get("externalId") for n in news if n.index not in placed]
            raise InvalidRequest(
                f"The assets form a cycle through their parentExternalId: {cyclic}."
            )
        return order

    def update(
        self, project: str, caller: Principal, items: list[dict[str, Any]]
    ) -> list[AssetOut]:
        self.access.require(caller, project, "assetsAcl", "WRITE")
        if len(items) > MAX_BATCH:
            raise InvalidRequest(
                f"At most {MAX_BATCH} asset updates per request, got {len(items)}."
            )
        changes = [self._validate_update(item, i) for i, item in enumerate(items)]
        idents = [c[0] for c in changes]
        keys = Counter(json.dumps(i, sort_keys=True) for i in idents)
        repeated = [json.loads(k) for k, c in keys.items() if c > 1]
        if repeated:
            raise Duplicated(
                "An asset may appear only once per update request.", duplicated=repeated
            )
        now = now_ms()
        with self.db.write() as s:
            rows = self._resolve(project, idents, session=s, ignore_unknown=False)
            if len(rows) < len(idents):  # an id and an externalId naming the same asset
                raise InvalidRequest(
                    "An asset may appear only once per update request (by id or externalId)."
                )
            self._check_external_ids(project, rows, [c[1] for c in changes], session=s)
            self._check_parents(project, [c[1] for c in changes], session=s)
            for row, (_ident, update) in zip(rows, changes, strict=True):
                self._apply_update(project, row, update, session=s)
                row.last_updated_time = now
            s.flush()
            return self._out(project, rows, session=s)

    @staticmethod
    def _validate_update(
        item: dict[str, Any], index: int
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        where = f"items[{index}]"
        ident = identifier_of(item)
        update = item.get("update")
        if not isinstance(update, dict):
            raise InvalidRequest(f"{where}: update must be an object of property changes.")
        out: dict[str, dict[str, Any]] = {}
        for key, change in update.items():
            if key not in UPDATE_OPS:
                raise InvalidRequest(
                    f"{where}: {key!r} cannot be updated. Updatable: {', '.join(UPDATE_OPS)}."
                )
            if not isinstance(change, dict) or not change or set(change) - set(UPDATE_OPS[key]):
                raise InvalidRequest(f"{where}: update.{key} accepts {', '.join(UPDATE_OPS[key])}.")
            try:
                if "setNull" in change:
                    if change["setNull"] is not True or len(change) > 1:
                        raise InvalidRequest("setNull must be true and alone.")
                    out[key] = {"setNull": True}
                elif "set" in change:
                    if len(change) > 1:
                        raise InvalidRequest("set cannot be combined with add or remove.")
                    out[key] = {"set": _field(key, change["set"])}
                elif key == "metadata":
                    add = _metadata(change.get("add", {}))
                    remove = change.get("remove", [])
                    if not isinstance(remove, list) or not all(isinstance(k, str) for k in remove):
                        raise InvalidRequest("metadata.remove must be a list of keys.")
                    out[key] = {"add": add, "remove": remove}
                else:  # labels
                    out[key] = {
                        "add": _labels(change.get("add", [])),
                        "remove": _labels(change.get("remove", [])),
                    }
            except InvalidRequest as exc:
                raise InvalidRequest(f"{where}: update.{key}: {exc.message}") from None
        if "parentId" in out and "parentExternalId" in out:
            # the SDK sends both when updating from a full Asset; they must agree (checked later)
            out["parentId"]["alsoExternalId"] = out.pop("parentExternalId")["set"]
        return ident, out

    def _check_external_ids(
        self,
        project: str,
        rows: list[AssetRow],
        updates: list[dict[str, dict[str, Any]]],
        *,
        session: Session,
    ) -> None:
        wanted = [
            (row, u["externalId"]["set"])
            for row, u in zip(rows, updates, strict=True)
            if "set" in u.get("externalId", {})
        ]
        values = [x for _row, x in wanted]
        duplicated = {x for x, c in Counter(values).items() if c > 1}
        taken = store.by_external_ids(project, values, session=session)
        for row, x in wanted:
            holder = taken.get(x)
            if holder is not None and holder.id != row.id:
                duplicated.add(x)
        if duplicated:
            raise Duplicated(
                "Asset externalId(s) already in use.",
                duplicated=[{"externalId": x} for x in sorted(duplicated)],
            )

    def _check_parents(
        self, project: str, updates: list[dict[str, dict[str, Any]]], *, session: Session
    ) -> None:
        ids = [u["parentId"]["set"] for u in updates if "parentId" in u]
        xids = [u["parentExternalId"]["set"] for u in updates if "parentExternalId" in u]
        xids += [
            u["parentId"]["alsoExternalId"]
            for u in updates
            if "alsoExternalId" in u.get("parentId", {})
        ]
        found_ids = store.by_ids(project, ids, session=session)
        found_xids = store.by_external_ids(project, xids, session=session)
        missing = [{"id": i} for i in dict.fromkeys(ids) if i not in found_ids]
        missing += [{"externalId": x} for x in dict.fromkeys(xids) if x not in found_xids]
        if missing:
            raise NotFound("Parent asset(s) not found.", missing=missing)
        for u in updates:
            also = u.get("parentId", {}).get("alsoExternalId")
            if also is not None and found_xids[also].id != u["parentId"]["set"]:
                raise InvalidRequest(
                    f"parentId {u['parentId']['set']} and parentExternalId {also!r} name different assets."
                )

    def _apply_update(
        self, project: str, row: AssetRow, update: dict[str, dict[str, Any]], *, session: Session
    ) -> None:
        for key, change in update.items():
            if key in ("parentId", "parentExternalId"):
                continue
            attr = {
                "externalId": "external_id",
                "dataSetId": "data_set_id",
                "metadata": "metadata_",
                "geoLocation": "geo_location",
            }.get(key, key)
            if "setNull" in change:
                setattr(row, attr, None)
            elif "set" in change:
                value = change["set"]
                setattr(row, attr, (value or None) if key in ("metadata", "labels") else value)
            elif key == "metadata":
                merged = {
                    k: v for k, v in (row.metadata_ or {}).items() if k not in change["remove"]
                }
                merged.update(change["add"])
                row.metadata_ = _metadata(merged) or None
            else:
                labels = [lb for lb in (row.labels or []) if lb not in change["remove"]]
                labels += [lb for lb in change["add"] if lb not in labels]
                row.labels = _labels(labels) or None
        if "parentId" in update:
            parent = store.by_ids(project, [update["parentId"]["set"]], session=session)[
                update["parentId"]["set"]
            ]
            self._move(project, row, parent, session=session)
        elif "parentExternalId" in update:
            xid = update["parentExternalId"]["set"]
            parent = store.by_external_ids(project, [xid], session=session)[xid]
            self._move(project, row, parent, session=session)

    def _move(self, project: str, row: AssetRow, parent: AssetRow, *, session: Session) -> None:
        if row.parent_id == parent.id:
            return
        if parent.path.startswith(row.path):
            what = "itself" if parent.id == row.id else f"its own descendant {parent.id}"
            raise InvalidRequest(
                f"Cannot move asset {row.id} under {what}: the hierarchy would contain a cycle."
            )
        old_prefix, old_depth = row.path, row.depth
        subtree = store.subtree(project, old_prefix, session=session)
        _place(row, parent)
        for r in subtree:
            if r.id == row.id:
                continue
            r.path = row.path + r.path[len(old_prefix) :]
            r.root_id = row.root_id
            r.depth = r.depth - old_depth + row.depth

    def delete(
        self,
        project: str,
        caller: Principal,
        idents: list[dict[str, Any]],
        *,
        recursive: bool,
        ignore_unknown: bool,
    ) -> None:
        self.access.require(caller, project, "assetsAcl", "WRITE")
        if len(idents) > MAX_BATCH:
            raise InvalidRequest(
                f"At most {MAX_BATCH} assets per delete request, got {len(idents)}."
            )
        idents = [identifier_of(i) for i in idents]
        with self.db.write() as s:
            rows = self._resolve(project, idents, session=s, ignore_unknown=ignore_unknown)
            ids = {r.id for r in rows}
            if recursive:
                for r in rows:
                    ids.update(d.id for d in store.subtree(project, r.path, session=s))
            else:
                blockers = store.children_outside(project, list(ids), session=s)
                if blockers:
                    parents = sorted({b.parent_id for b in blockers if b.parent_id is not None})
                    raise InvalidRequest(
                        f"Asset(s) {parents} have children; delete the children too or pass recursive=true."
                    )
            store.delete_ids(project, list(ids), session=s)
