"""``/raw/dbs`` bodies: names of databases and tables, rows (a key and free-form columns),
keys. Their routes share one path pattern, so each branch parses its body with ``parse``."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from fnhost.api.wire import WireModel
from fnhost.services.raw import MAX_INSERT, MAX_NAMES_PER_REQUEST, RowWrite


class NameIn(WireModel):
    name: str


class Names(WireModel):
    items: Annotated[list[NameIn], Field(min_length=1, max_length=MAX_NAMES_PER_REQUEST)]

    def names(self) -> list[str]:
        return [i.name for i in self.items]


class DatabasesDelete(Names):
    recursive: bool = False


class RowIn(WireModel):
    key: str
    columns: dict[str, Any]  # the user's own data: any JSON object


class Rows(WireModel):
    items: Annotated[list[RowIn], Field(min_length=1, max_length=MAX_INSERT)]

    def rows(self) -> list[RowWrite]:
        return [RowWrite(i.key, i.columns) for i in self.items]


class KeyIn(WireModel):
    key: Annotated[str, Field(min_length=1)]


class Keys(WireModel):
    items: Annotated[list[KeyIn], Field(min_length=1, max_length=MAX_INSERT)]

    def keys(self) -> list[str]:
        return [i.key for i in self.items]
