"""Shapes every resource shares: ids, identifiers, ``byids``/``delete`` bodies, list pages."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from fnhost.api.wire import WireModel
from fnhost.services.identifiers import Identifier

# ids and times are 64-bit in every database fnhost runs on: a larger number is refused
# here rather than overflowing in the driver
INT64_MAX = 2**63 - 1
Id = Annotated[int, Field(ge=1, le=INT64_MAX)]
Millis = Annotated[int, Field(ge=0, le=INT64_MAX)]
ExternalId = Annotated[str, Field(min_length=1, max_length=255)]
MAX_ITEMS = 1000


class IdentifierIn(WireModel):
    """``{"id": 1}`` or ``{"externalId": "x"}`` (the id wins when both are given)."""

    id: Id | None = None
    external_id: str | None = None

    @model_validator(mode="after")
    def _one(self) -> IdentifierIn:
        if self.id is None and self.external_id is None:
            raise ValueError("Each item needs an id or an externalId.")
        return self

    def identifier(self) -> Identifier:
        if self.id is not None:
            return Identifier(id=self.id)
        return Identifier(external_id=self.external_id)


class IdIn(WireModel):
    """``{"id": 1}``: objects that have no external id (calls, sessions, schedules)."""

    id: Id


class ByIds(WireModel):
    """``byids`` and ``delete``: ``{"items": [{"id"} | {"externalId"}], "ignoreUnknownIds"}``."""

    items: Annotated[list[IdentifierIn], Field(min_length=1, max_length=MAX_ITEMS)]
    ignore_unknown_ids: bool = False

    def identifiers(self) -> list[Identifier]:
        return [i.identifier() for i in self.items]


class ByIdsOnly(WireModel):
    """``byids``, ``delete``, ``revoke`` of objects named by id alone."""

    items: Annotated[list[IdIn], Field(min_length=1, max_length=MAX_ITEMS)]
    ignore_unknown_ids: bool = False

    def ids(self) -> list[int]:
        return [i.id for i in self.items]


class TimeRange(WireModel):
    """``{"min": ms, "max": ms}`` (inclusive; either may be left out)."""

    min: Millis | None = None
    max: Millis | None = None


def limit_of(value: int | None, *, default: int, maximum: int) -> int:
    """A page size: the default when not given, at most ``maximum`` (larger asks get it)."""
    return default if value is None else min(value, maximum)


Limit = Annotated[int, Field(ge=1)]
# a cursor is opaque to clients; ours are the last id served, as a string
Cursor = Annotated[str, Field(max_length=64)]
