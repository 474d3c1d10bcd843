"""Assets: validation, hierarchy rules (parents, roots, cycles) and atomic batches.

Every write is one transaction: the whole batch is validated and applied, or nothing
is written. Limits follow the CDF assets API.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic.alias_generators import to_camel
from sqlalchemy.orm import Session

from fnhost.auth.capabilities import Principal
from fnhost.clock import now_ms
from fnhost.errors import Duplicated, InvalidRequest, NotFound
from fnhost.services.access import Access
from fnhost.services.identifiers import Identifier, resolve_all
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
AGGREGATED_PROPERTIES = ("child_count", "path", "depth")
# labels are stored, and served, as the API's label objects
_WIRE_LABEL_KEY = "externalId"
PARTITION = re.compile(r"^(\d+)/(\d+)$")

# property (the domain's name) -> the operations an update may do to it
UPDATE_OPS: dict[str, tuple[str, ...]] = {
    "external_id": ("set", "set_null"),
    "name": ("set",),
    "description": ("set", "set_null"),
    "data_set_id": ("set", "set_null"),
    "metadata": ("set", "add", "remove"),
    "source": ("set", "set_null"),
    "parent_id": ("set",),
    "parent_external_id": ("set",),
    "labels": ("set", "add", "remove"),
    "geo_location": ("set", "set_null"),
}
# the row's attribute for a property, where the two differ
_COLUMN = {"metadata": "metadata_"}


@dataclass(frozen=True)
class AssetSpec:
    """An asset to create. ``labels`` are label external ids; ``geo_location`` a GeoJSON
    Feature; ``parent_id`` or ``parent_external_id`` (which may name an asset of the same
    request) places it in a hierarchy."""

    name: str
    external_id: str | None = None
    parent_id: int | None = None
    parent_external_id: str | None = None
    description: str | None = None
    data_set_id: int | None = None
    metadata: dict[str, str] | None = None
    source: str | None = None
    labels: list[str] | None = None
    geo_location: dict[str, Any] | None = None


@dataclass(frozen=True)
class AssetOp:
    """One property's change: ``set`` a value, ``set_null``, or (metadata, labels) ``add``
    and ``remove``. ``given`` names the operations the request used."""

    given: frozenset[str]
    set: Any = None
    add: Any = None
    remove: Any = None


@dataclass(frozen=True)
class AssetChange:
    ident: Identifier
    ops: dict[str, AssetOp]  # property (domain name) -> its change


@dataclass(frozen=True)
class AssetFilter:
    name: str | None = None
    source: str | None = None
    external_id_prefix: str | None = None
    metadata: dict[str, str] | None = None
    root: bool | None = None
    created: tuple[int | None, int | None] | None = None
    last_updated: tuple[int | None, int | None] | None = None
    parent_ids: list[int] | None = None
    parent_external_ids: list[str] | None = None
    data_set_ids: list[Identifier] | None = None
    asset_subtree_ids: list[Identifier] | None = None
    unsupported: str | None = None  # a filter this server cannot apply (labels, geoLocation)


@dataclass
class AssetOut:
    """An asset as served: the row plus what is derived from its neighbours, and the
    aggregates asked for (``aggregated``, of ``AGGREGATED_PROPERTIES``)."""

    row: AssetRow
    parent_external_id: str | None = None
    aggregated: Sequence[str] = ()
    child_count: int | None = None

    @property
    def path_ids(self) -> list[int]:
        return [int(p) for p in self.row.path.strip("/").split("/")]


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


def _labels(value: list[str]) -> list[dict[str, str]]:
    """Label external ids as the stored (and served) label objects, each once."""
    out: list[dict[str, str]] = []
    for label in value:
        xid = _str(label, "label externalId", MAX_EXTERNAL_ID, allow_empty=False)
        if {_WIRE_LABEL_KEY: xid} not in out:
            out.append({_WIRE_LABEL_KEY: xid})
    if len(out) > MAX_LABELS:
        raise InvalidRequest(f"An asset may have at most {MAX_LABELS} labels, got {len(out)}.")
    return out


def _label_ids(labels: list[dict[str, str]] | None) -> list[str]:
    return [lb[_WIRE_LABEL_KEY] for lb in labels or []]


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
    """Validate the value of one settable property (``key``: its domain name); the message
    names it in the API's word."""
    word = to_camel(key)
    if key in ("external_id", "parent_external_id"):
        return _str(value, word, MAX_EXTERNAL_ID, allow_empty=False)
    if key == "name":
        return _name(value)
    if key == "description":
        return _str(value, word, MAX_DESCRIPTION)
    if key == "source":
        return _str(value, word, MAX_SOURCE)
    if key in ("data_set_id", "parent_id"):
        return _int_id(value, word)
    if key == "metadata":
        return _metadata(value)
    if key == "labels":
        if not isinstance(value, list):
            raise InvalidRequest('labels must be a list of {"externalId": ...} objects.')
        return _labels(value)
    if key == "geo_location":
        return _geo(value)
    raise InvalidRequest(f"Unknown asset property {word!r}.")


def _validate_create(spec: AssetSpec, index: int) -> _NewAsset:
    if spec.name is None:
        raise InvalidRequest(f"items[{index}]: name is required.")
    given = {
        "name": spec.name,
        "external_id": spec.external_id,
        "description": spec.description,
        "data_set_id": spec.data_set_id,
        "metadata": spec.metadata,
        "source": spec.source,
        "labels": spec.labels,
        "geo_location": spec.geo_location,
        "parent_id": spec.parent_id,
        "parent_external_id": spec.parent_external_id,
    }
    fields: dict[str, Any] = {}
    for key, value in given.items():
        if value is None:
            continue
        try:
            fields[key] = _field(key, value)
        except InvalidRequest as exc:
            raise InvalidRequest(f"items[{index}]: {exc.message}") from None
    if "parent_id" in fields and "parent_external_id" in fields:
        raise InvalidRequest(f"items[{index}]: give parentId or parentExternalId, not both.")
    return _NewAsset(
        index=index,
        fields=fields,
        parent_id=fields.pop("parent_id", None),
        parent_external_id=fields.pop("parent_external_id", None),
    )


def _apply_fields(row: AssetRow, fields: dict[str, Any]) -> None:
    for key, value in fields.items():
        setattr(row, _COLUMN.get(key, key), value)


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


class Assets:
    def __init__(self, db: Database, access: Access) -> None:
        self.db = db
        self.access = access

    # -- reading -----------------------------------------------------------------------------
    def _query(self, project: str, filt: AssetFilter | None, *, session: Session) -> AssetQuery:
        filt = filt or AssetFilter()
        if filt.unsupported is not None:
            raise InvalidRequest(
                f"Filtering assets by {filt.unsupported} is not supported by this server."
            )
        q = AssetQuery()
        if filt.name is not None:
            q.name = _str(filt.name, "filter.name", MAX_NAME)
        if filt.source is not None:
            q.source = _str(filt.source, "filter.source", MAX_SOURCE)
        if filt.external_id_prefix is not None:
            q.external_id_prefix = _str(
                filt.external_id_prefix, "filter.externalIdPrefix", MAX_EXTERNAL_ID
            )
        if filt.metadata is not None:
            q.metadata = _metadata(filt.metadata)
        q.root = filt.root
        if filt.created is not None:
            q.created_min, q.created_max = filt.created
        if filt.last_updated is not None:
            q.updated_min, q.updated_max = filt.last_updated
        parent_ids: list[int] | None = None
        if filt.parent_ids is not None:
            parent_ids = list(filt.parent_ids)
        if filt.parent_external_ids is not None:
            xids = [
                _str(v, "filter.parentExternalIds[]", MAX_EXTERNAL_ID)
                for v in filt.parent_external_ids
            ]
            found = store.by_external_ids(project, xids, session=session)
            parent_ids = [*(parent_ids or []), *(r.id for r in found.values())]
        q.parent_ids = parent_ids
        if filt.data_set_ids is not None:
            if any(i.id is None for i in filt.data_set_ids):
                raise InvalidRequest(
                    "filter.dataSetIds: data set external ids are not supported; use ids."
                )
            q.data_set_ids = [i.id for i in filt.data_set_ids if i.id is not None]
        if filt.asset_subtree_ids is not None:
            rows = self._resolve(project, filt.asset_subtree_ids, session=session, ignore_unknown=False)
            q.subtree_paths = [r.path for r in rows]
            size = store.count(project, AssetQuery(subtree_paths=q.subtree_paths), session=session)
            if size > MAX_SUBTREE:
                raise InvalidRequest(
                    f"The given subtrees hold {size} assets; at most {MAX_SUBTREE} are allowed."
                )
        return q

    def _resolve(
        self, project: str, idents: Sequence[Identifier], *, session: Session, ignore_unknown: bool
    ) -> list[AssetRow]:
        """Rows for identifiers, in order, each once; NotFound lists the unknown ones."""
        by_id = store.by_ids(project, [i.id for i in idents if i.id is not None], session=session)
        by_xid = store.by_external_ids(
            project, [i.external_id for i in idents if i.id is None and i.external_id], session=session
        )
        rows = [
            by_id.get(i.id) if i.id is not None else by_xid.get(i.external_id or "") for i in idents
        ]
        return resolve_all(
            idents, rows, what="Assets", ignore_unknown=ignore_unknown, entry=Identifier.entry
        )

    def _out(
        self,
        project: str,
        rows: Sequence[AssetRow],
        *,
        session: Session,
        aggregated: Sequence[str] = (),
    ) -> list[AssetOut]:
        unknown = [a for a in aggregated if a not in AGGREGATED_PROPERTIES]
        if unknown:
            raise InvalidRequest(f"Unknown aggregated properties {unknown}.")
        parent_ids = [r.parent_id for r in rows if r.parent_id is not None]
        parent_xids = store.external_ids_of(project, parent_ids, session=session)
        counts = (
            store.child_counts(project, [r.id for r in rows], session=session)
            if "child_count" in aggregated
            else {}
        )
        out = []
        for r in rows:
            parent_xid = parent_xids.get(r.parent_id) if r.parent_id is not None else None
            count = counts.get(r.id, 0) if "child_count" in aggregated else None
            out.append(AssetOut(r, parent_xid, tuple(aggregated), count))
        return out

    def by_ids(
        self,
        project: str,
        caller: Principal,
        idents: list[Identifier],
        *,
        ignore_unknown: bool,
        aggregated: Sequence[str] = (),
    ) -> list[AssetOut]:
        self.access.require(caller, project, "assetsAcl", "READ")
        with self.db.read() as s:
            rows = self._resolve(project, idents, session=s, ignore_unknown=ignore_unknown)
            return self._out(project, rows, session=s, aggregated=aggregated)

    def list_page(
        self,
        project: str,
        caller: Principal,
        *,
        filt: AssetFilter | None,
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
        self, project: str, caller: Principal, *, terms: Sequence[str], filt: AssetFilter | None, limit: int
    ) -> list[AssetOut]:
        """Assets whose name or description hold every word of ``terms`` (each the text of
        one search field, at most 1000 characters)."""
        self.access.require(caller, project, "assetsAcl", "READ")
        words: list[str] = []
        for text in terms:
            words.extend(_str(text, "search", 1000).split())
        with self.db.read() as s:
            q = self._query(project, filt, session=s)
            rows = store.search(project, q, words, session=s, limit=limit)
            return self._out(project, rows, session=s)

    def count(
        self, project: str, caller: Principal, *, filt: AssetFilter | None, not_null: Sequence[str] = ()
    ) -> int:
        """How many assets match ``filt`` and have a value in each column of ``not_null``."""
        self.access.require(caller, project, "assetsAcl", "READ")
        bad = [c for c in not_null if c not in store.NULLABLE_COLUMNS]
        if bad:
            raise InvalidRequest(
                f"Counting by property {bad} is not supported; use one of "
                f"{', '.join(store.NULLABLE_COLUMNS)}."
            )
        with self.db.read() as s:
            q = self._query(project, filt, session=s)
            q.not_null = list(not_null)
            return store.count(project, q, session=s)

    # -- writing -----------------------------------------------------------------------------
    def create(self, project: str, caller: Principal, specs: list[AssetSpec]) -> list[AssetOut]:
        self.access.require(caller, project, "assetsAcl", "WRITE")
        if len(specs) > MAX_BATCH:
            raise InvalidRequest(f"At most {MAX_BATCH} assets per request, got {len(specs)}.")
        news = [_validate_create(spec, i) for i, spec in enumerate(specs)]
        xids = [n.fields["external_id"] for n in news if "external_id" in n.fields]
        dup_in_batch = sorted(x for x, c in Counter(xids).items() if c > 1)
        by_xid = {n.fields["external_id"]: n for n in news if "external_id" in n.fields}
        now = now_ms()
        with self.db.write() as s:
            taken = store.by_external_ids(project, xids, session=s)
            duplicated = sorted(set(dup_in_batch) | set(taken))
            if duplicated:
                raise Duplicated(
                    f"Asset externalId(s) already in use{' or repeated in the request' if dup_in_batch else ''}.",
                    duplicated=[Identifier(external_id=x).entry() for x in duplicated],
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
                    ident = Identifier(id=n.parent_id).entry()
                elif (
                    n.parent_external_id is not None
                    and n.parent_external_id not in by_xid
                    and (n.parent_external_id not in parents_by_xid)
                ):
                    ident = Identifier(external_id=n.parent_external_id).entry()
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
            cyclic = [n.fields.get("external_id") for n in news if n.index not in placed]
            raise InvalidRequest(
                f"The assets form a cycle through their parentExternalId: {cyclic}."
            )
        return order

    def update(self, project: str, caller: Principal, changes: list[AssetChange]) -> list[AssetOut]:
        self.access.require(caller, project, "assetsAcl", "WRITE")
        if len(changes) > MAX_BATCH:
            raise InvalidRequest(
                f"At most {MAX_BATCH} asset updates per request, got {len(changes)}."
            )
        checked = [self._validate_update(c, i) for i, c in enumerate(changes)]
        idents = [c.ident for c in changes]
        repeated = [i for i, n in Counter(idents).items() if n > 1]
        if repeated:
            raise Duplicated(
                "An asset may appear only once per update request.",
                duplicated=[i.entry() for i in repeated],
            )
        now = now_ms()
        with self.db.write() as s:
            rows = self._resolve(project, idents, session=s, ignore_unknown=False)
            if len(rows) < len(idents):  # an id and an externalId naming the same asset
                raise InvalidRequest(
                    "An asset may appear only once per update request (by id or externalId)."
                )
            self._check_external_ids(project, rows, checked, session=s)
            self._check_parents(project, checked, session=s)
            for row, update in zip(rows, checked, strict=True):
                self._apply_update(project, row, update, session=s)
                row.last_updated_time = now
            s.flush()
            return self._out(project, rows, session=s)

    @staticmethod
    def _validate_update(change: AssetChange, index: int) -> dict[str, dict[str, Any]]:
        """The change as ``{property: {"set"|"set_null"|"add"|"remove": value}}``, checked."""
        where = f"items[{index}]"
        out: dict[str, dict[str, Any]] = {}
        for key, op in change.ops.items():
            word = to_camel(key)
            if key not in UPDATE_OPS:
                raise InvalidRequest(
                    f"{where}: {word!r} cannot be updated. "
                    f"Updatable: {', '.join(to_camel(k) for k in UPDATE_OPS)}."
                )
            allowed = UPDATE_OPS[key]
            if not op.given or op.given - set(allowed):
                raise InvalidRequest(
                    f"{where}: update.{word} accepts {', '.join(to_camel(a) for a in allowed)}."
                )
            try:
                if "set_null" in op.given:
                    if len(op.given) > 1:
                        raise InvalidRequest("setNull must be true and alone.")
                    out[key] = {"set_null": True}
                elif "set" in op.given:
                    if len(op.given) > 1:
                        raise InvalidRequest("set cannot be combined with add or remove.")
                    out[key] = {"set": _field(key, op.set)}
                elif key == "metadata":
                    remove = op.remove if op.remove is not None else []
                    if not isinstance(remove, list) or not all(isinstance(k, str) for k in remove):
                        raise InvalidRequest("metadata.remove must be a list of keys.")
                    add = _metadata(op.add if op.add is not None else {})
                    out[key] = {"add": add, "remove": remove}
                else:  # labels
                    out[key] = {
                        "add": _field(key, op.add if op.add is not None else []),
                        "remove": _field(key, op.remove if op.remove is not None else []),
                    }
            except InvalidRequest as exc:
                raise InvalidRequest(f"{where}: update.{word}: {exc.message}") from None
        if "parent_id" in out and "parent_external_id" in out:
            # the SDK sends both when updating from a full Asset; they must agree (checked later)
            out["parent_id"]["also_external_id"] = out.pop("parent_external_id")["set"]
        return out

    def _check_external_ids(
        self,
        project: str,
        rows: list[AssetRow],
        updates: list[dict[str, dict[str, Any]]],
        *,
        session: Session,
    ) -> None:
        wanted = [
            (row, u["external_id"]["set"])
            for row, u in zip(rows, updates, strict=True)
            if "set" in u.get("external_id", {})
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
                duplicated=[Identifier(external_id=x).entry() for x in sorted(duplicated)],
            )

    def _check_parents(
        self, project: str, updates: list[dict[str, dict[str, Any]]], *, session: Session
    ) -> None:
        ids = [u["parent_id"]["set"] for u in updates if "parent_id" in u]
        xids = [u["parent_external_id"]["set"] for u in updates if "parent_external_id" in u]
        xids += [
            u["parent_id"]["also_external_id"]
            for u in updates
            if "also_external_id" in u.get("parent_id", {})
        ]
        found_ids = store.by_ids(project, ids, session=session)
        found_xids = store.by_external_ids(project, xids, session=session)
        missing = [Identifier(id=i).entry() for i in dict.fromkeys(ids) if i not in found_ids]
        missing += [
            Identifier(external_id=x).entry() for x in dict.fromkeys(xids) if x not in found_xids
        ]
        if missing:
            raise NotFound("Parent asset(s) not found.", missing=missing)
        for u in updates:
            also = u.get("parent_id", {}).get("also_external_id")
            if also is not None and found_xids[also].id != u["parent_id"]["set"]:
                raise InvalidRequest(
                    f"parentId {u['parent_id']['set']} and parentExternalId {also!r} name different assets."
                )

    def _apply_update(
        self, project: str, row: AssetRow, update: dict[str, dict[str, Any]], *, session: Session
    ) -> None:
        for key, change in update.items():
            if key in ("parent_id", "parent_external_id"):
                continue
            attr = _COLUMN.get(key, key)
            if "set_null" in change:
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
                row.labels = _labels(_label_ids(labels)) or None
        if "parent_id" in update:
            parent = store.by_ids(project, [update["parent_id"]["set"]], session=session)[
                update["parent_id"]["set"]
            ]
            self._move(project, row, parent, session=session)
        elif "parent_external_id" in update:
            xid = update["parent_external_id"]["set"]
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
        idents: list[Identifier],
        *,
        recursive: bool,
        ignore_unknown: bool,
    ) -> None:
        self.access.require(caller, project, "assetsAcl", "WRITE")
        if len(idents) > MAX_BATCH:
            raise InvalidRequest(
                f"At most {MAX_BATCH} assets per delete request, got {len(idents)}."
            )
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
