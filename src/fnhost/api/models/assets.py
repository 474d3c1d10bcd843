"""``/assets`` bodies: create, list and search (filter), byids, update, delete, aggregate.

Unlike the other resources, assets refuse properties they do not know (``StrictModel``),
as the CDF assets API does: a misspelt filter must not silently match everything.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from fnhost.api.models.common import ByIds, Cursor, Id, IdentifierIn, Limit, TimeRange
from fnhost.api.wire import WireModel
from fnhost.services.assets import (
    MAX_BATCH,
    MAX_PARENT_IDS,
    MAX_SUBTREE_ROOTS,
    AssetChange,
    AssetFilter,
    AssetOp,
    AssetSpec,
)

# the API's names of aggregated properties -> the domain's
AGGREGATED = {"childCount": "child_count", "path": "path", "depth": "depth"}
Aggregated = Literal["childCount", "path", "depth"]


class StrictModel(WireModel):
    model_config = ConfigDict(**{**WireModel.model_config, "extra": "forbid"})


class LabelIn(StrictModel):
    external_id: str


def _label_ids(labels: list[LabelIn] | None) -> list[str] | None:
    return None if labels is None else [lb.external_id for lb in labels]


class AssetWrite(StrictModel):
    name: str
    external_id: str | None = None
    parent_id: Id | None = None
    parent_external_id: str | None = None
    description: str | None = None
    data_set_id: Id | None = None
    metadata: dict[str, str] | None = None
    source: str | None = None
    labels: list[LabelIn] | None = None
    geo_location: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_id(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("id") is not None:
            raise ValueError("id is assigned by the server and must not be given.")
        if isinstance(value, dict) and "id" in value:
            value = {k: v for k, v in value.items() if k != "id"}
        return value

    def spec(self) -> AssetSpec:
        return AssetSpec(
            name=self.name,
            external_id=self.external_id,
            parent_id=self.parent_id,
            parent_external_id=self.parent_external_id,
            description=self.description,
            data_set_id=self.data_set_id,
            metadata=self.metadata,
            source=self.source,
            labels=_label_ids(self.labels),
            geo_location=self.geo_location,
        )


class AssetsCreate(WireModel):
    items: Annotated[list[AssetWrite], Field(min_length=1, max_length=MAX_BATCH)]


class AssetFilterIn(StrictModel):
    name: str | None = None
    parent_ids: Annotated[list[Id], Field(max_length=MAX_PARENT_IDS)] | None = None
    parent_external_ids: Annotated[list[str], Field(max_length=MAX_PARENT_IDS)] | None = None
    asset_subtree_ids: Annotated[list[IdentifierIn], Field(min_length=1, max_length=MAX_SUBTREE_ROOTS)] | None = None
    data_set_ids: Annotated[list[IdentifierIn], Field(min_length=1, max_length=MAX_PARENT_IDS)] | None = None
    metadata: dict[str, str] | None = None
    source: str | None = None
    created_time: TimeRange | None = None
    last_updated_time: TimeRange | None = None
    root: bool | None = None
    external_id_prefix: str | None = None
    # known to CDF, not applied by this server: refused with a message saying so
    labels: Any = None
    geo_location: Any = None

    def filter(self) -> AssetFilter:
        unsupported = next(
            (word for word, value in (("labels", self.labels), ("geoLocation", self.geo_location)) if value is not None),
            None,
        )
        return AssetFilter(
            name=self.name,
            source=self.source,
            external_id_prefix=self.external_id_prefix,
            metadata=self.metadata,
            root=self.root,
            created=None if self.created_time is None else (self.created_time.min, self.created_time.max),
            last_updated=(
                None
                if self.last_updated_time is None
                else (self.last_updated_time.min, self.last_updated_time.max)
            ),
            parent_ids=self.parent_ids,
            parent_external_ids=self.parent_external_ids,
            data_set_ids=None if self.data_set_ids is None else [i.identifier() for i in self.data_set_ids],
            asset_subtree_ids=(
                None if self.asset_subtree_ids is None else [i.identifier() for i in self.asset_subtree_ids]
            ),
            unsupported=unsupported,
        )


def filter_of(value: AssetFilterIn | None) -> AssetFilter | None:
    return None if value is None else value.filter()


class AssetsList(WireModel):
    filter: AssetFilterIn | None = None
    limit: Limit | None = None
    cursor: Cursor | None = None
    partition: str | None = None
    aggregated_properties: list[Aggregated] | None = None
    advanced_filter: Any = None
    sort: Any = None

    def aggregated(self) -> list[str]:
        return [AGGREGATED[a] for a in self.aggregated_properties or []]


class AssetsByIds(ByIds):
    aggregated_properties: list[Aggregated] | None = None

    def aggregated(self) -> list[str]:
        return [AGGREGATED[a] for a in self.aggregated_properties or []]


class AssetsDelete(ByIds):
    recursive: bool = False


class SearchIn(StrictModel):
    name: str | None = None
    description: str | None = None
    query: str | None = None

    def terms(self) -> list[str]:
        return [t for t in (self.name, self.description, self.query) if t is not None]


class AssetsSearch(WireModel):
    search: SearchIn | None = None
    filter: AssetFilterIn | None = None
    limit: Limit | None = None


class PropertyIn(WireModel):
    property: Annotated[list[str], Field(min_length=1, max_length=1)]


class AssetsAggregate(WireModel):
    aggregate: str = "count"
    filter: AssetFilterIn | None = None
    properties: list[PropertyIn] | None = None
    advanced_filter: Any = None


# -- update: {"id"|"externalId", "update": {property: {"set"|"setNull"|"add"|"remove": …}}} --------
class _Op(WireModel):
    set_null: bool = False

    def op(self) -> AssetOp:
        given = {to for name, to in (("set", "set"), ("set_null", "set_null"), ("add", "add"), ("remove", "remove")) if name in self.model_fields_set}
        if not self.set_null:
            given.discard("set_null")
        return AssetOp(
            given=frozenset(given),
            set=self._value("set"),
            add=self._value("add"),
            remove=self._value("remove"),
        )

    def _value(self, name: str) -> Any:
        return getattr(self, name, None)


class TextOp(_Op):
    set: str | None = None


class IdOp(_Op):
    set: Id | None = None


class GeoOp(_Op):
    set: dict[str, Any] | None = None


class MetadataOp(_Op):
    set: dict[str, str] | None = None
    add: dict[str, str] | None = None
    remove: list[str] | None = None


class LabelsOp(_Op):
    set: list[LabelIn] | None = None
    add: list[LabelIn] | None = None
    remove: list[LabelIn] | None = None

    def _value(self, name: str) -> Any:
        return _label_ids(getattr(self, name))


class AssetUpdateOps(StrictModel):
    external_id: TextOp | None = None
    name: TextOp | None = None
    description: TextOp | None = None
    data_set_id: IdOp | None = None
    metadata: MetadataOp | None = None
    source: TextOp | None = None
    parent_id: IdOp | None = None
    parent_external_id: TextOp | None = None
    labels: LabelsOp | None = None
    geo_location: GeoOp | None = None

    @model_validator(mode="before")
    @classmethod
    def _updatable(cls, value: Any) -> Any:
        if isinstance(value, dict):
            known = {f.alias or n for n, f in cls.model_fields.items()}
            unknown = sorted(k for k in value if k not in known)
            if unknown:
                raise ValueError(
                    f"{unknown} cannot be updated. Updatable: {', '.join(sorted(known))}."
                )
        return value


class AssetUpdate(IdentifierIn):
    update: AssetUpdateOps

    def change(self) -> AssetChange:
        ops = {
            name: op.op()
            for name in AssetUpdateOps.model_fields
            if (op := getattr(self.update, name)) is not None
        }
        return AssetChange(ident=self.identifier(), ops=ops)


class AssetsUpdate(WireModel):
    items: Annotated[list[AssetUpdate], Field(min_length=1, max_length=MAX_BATCH)]
