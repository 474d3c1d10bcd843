"""RAW: key-value rows in tables in databases, where functions keep state between calls.

Rows are read in key order. A cursor is opaque to clients: base64 of a small JSON object
holding the last key served, the end of the key range it belongs to and the time filters,
so the cursors from ``/cursors`` can be read in parallel with nothing but the cursor.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from fnhost.auth.capabilities import Principal
from fnhost.clock import now_ms
from fnhost.errors import Duplicated, InvalidRequest, NotFound
from fnhost.services.access import Access
from fnhost.store import raw as store
from fnhost.store.db import Database
from fnhost.store.raw import RawDatabaseRow, RawRow, RawTableRow

MAX_DB_NAME = 32
MAX_TABLE_NAME = 64
MAX_KEY = 1024
MAX_INSERT = 10_000
MAX_ROW_BYTES = 1024 * 1024
MAX_CURSORS = 10_000
MAX_NAMES_PER_REQUEST = 1000


@dataclass(frozen=True)
class RowWrite:
    """A row to insert or replace: its key, and its columns (the user's own JSON)."""

    key: str
    columns: dict[str, Any]


@dataclass
class RowPage:
    rows: list[RawRow]
    next_cursor: str | None


def _name(value: str, what: str, maximum: int) -> str:
    if not 1 <= len(value) <= maximum:
        raise InvalidRequest(
            f"{what} name must be a string of 1 to {maximum} characters, got {value!r:.60}."
        )
    return value


def _names(given: list[str], what: str, maximum: int) -> list[str]:
    if len(given) > MAX_NAMES_PER_REQUEST:
        raise InvalidRequest(
            f"At most {MAX_NAMES_PER_REQUEST} {what}s per request, got {len(given)}."
        )
    names = [_name(n, what, maximum) for n in given]
    repeated = sorted(n for n, c in Counter(names).items() if c > 1)
    if repeated:
        raise Duplicated(
            f"{what} names repeated in the request.", duplicated=[{"name": n} for n in repeated]
        )
    return names


def encode_cursor(state: dict[str, Any]) -> str:
    raw = json.dumps({k: v for k, v in state.items() if v is not None}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any]:
    if not cursor:
        return {}
    try:
        state = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except ValueError:
        raise InvalidRequest(f"Invalid cursor {cursor[:40]!r}.") from None
    if not isinstance(state, dict) or set(state) - {"a", "s", "e", "mn", "mx"}:
        raise InvalidRequest(f"Invalid cursor {cursor[:40]!r}.")
    for key in ("a", "s", "e"):
        if key in state and not isinstance(state[key], str):
            raise InvalidRequest(f"Invalid cursor {cursor[:40]!r}.")
    for key in ("mn", "mx"):
        if key in state and not isinstance(state[key], int):
            raise InvalidRequest(f"Invalid cursor {cursor[:40]!r}.")
    return state


class Raw:
    def __init__(self, db: Database, access: Access) -> None:
        self.db = db
        self.access = access

    # -- lookups ------------------------------------------------------------------------------
    @staticmethod
    def _database(project: str, name: str, *, session: Session) -> RawDatabaseRow:
        row = store.database(project, name, session=session)
        if row is None:
            raise NotFound(f"Database {name!r} does not exist.")
        return row

    def _table(self, project: str, db_name: str, name: str, *, session: Session) -> RawTableRow:
        database = self._database(project, db_name, session=session)
        row = store.table(database.id, name, session=session)
        if row is None:
            raise NotFound(f"Table {name!r} does not exist in database {db_name!r}.")
        return row

    def _ensure_table(
        self, project: str, db_name: str, name: str, *, session: Session
    ) -> RawTableRow:
        now = now_ms()
        database = store.database(project, db_name, session=session)
        if database is None:
            database = RawDatabaseRow(project=project, name=db_name, created_time=now)
            session.add(database)
            session.flush()
        row = store.table(database.id, name, session=session)
        if row is None:
            row = RawTableRow(database_id=database.id, name=name, created_time=now)
            session.add(row)
            session.flush()
        return row

    # -- databases ------------------------------------------------------------------------------
    def create_databases(
        self, project: str, caller: Principal, names: list[str]
    ) -> list[RawDatabaseRow]:
        self.access.require(caller, project, "rawAcl", "WRITE")
        names = _names(names, "Database", MAX_DB_NAME)
        now = now_ms()
        with self.db.write() as s:
            taken = store.databases(project, names, session=s)
            if taken:
                raise Duplicated(
                    "Databases already exist.",
                    duplicated=[{"name": n} for n in names if n in taken],
                )
            rows = [RawDatabaseRow(project=project, name=n, created_time=now) for n in names]
            s.add_all(rows)
            s.flush()
            return rows

    def list_databases(
        self, project: str, caller: Principal, *, limit: int, cursor: str | None
    ) -> tuple[list[RawDatabaseRow], str | None]:
        self.access.require(caller, project, "rawAcl", "LIST")
        after = decode_cursor(cursor).get("a")
        with self.db.read() as s:
            rows = store.list_databases(project, session=s, limit=limit, after=after)
        return rows, (encode_cursor({"a": rows[-1].name}) if len(rows) == limit else None)

    def delete_databases(
        self, project: str, caller: Principal, names: list[str], *, recursive: bool
    ) -> None:
        self.access.require(caller, project, "rawAcl", "WRITE")
        names = _names(names, "Database", MAX_DB_NAME)
        with self.db.write() as s:
            found = store.databases(project, names, session=s)
            missing = [{"name": n} for n in names if n not in found]
            if missing:
                raise NotFound("Databases not found.", missing=missing)
            if not recursive:
                full = [n for n in names if store.count_tables(found[n].id, session=s)]
                if full:
                    raise InvalidRequest(
                        f"Database(s) {full} still have tables; delete the tables first or pass recursive=true."
                    )
            for n in names:
                store.delete_database(found[n].id, session=s)

    # -- tables -----------------------------------------------------------------------------------
    def create_tables(
        self,
        project: str,
        caller: Principal,
        db_name: str,
        names: list[str],
        *,
        ensure_parent: bool,
    ) -> list[RawTableRow]:
        self.access.require(caller, project, "rawAcl", "WRITE")
        _name(db_name, "Database", MAX_DB_NAME)
        names = _names(names, "Table", MAX_TABLE_NAME)
        now = now_ms()
        with self.db.write() as s:
            database = store.database(project, db_name, session=s)
            if database is None:
                if not ensure_parent:
                    raise NotFound(
                        f"Database {db_name!r} does not exist; create it or pass ensureParent=true."
                    )
                database = RawDatabaseRow(project=project, name=db_name, created_time=now)
                s.add(database)
                s.flush()
            taken = store.tables(database.id, names, session=s)
            if taken:
                raise Duplicated(
                    f"Tables already exist in database {db_name!r}.",
                    duplicated=[{"name": n} for n in names if n in taken],
                )
            rows = [RawTableRow(database_id=database.id, name=n, created_time=now) for n in names]
            s.add_all(rows)
            s.flush()
            return rows

    def list_tables(
        self, project: str, caller: Principal, db_name: str, *, limit: int, cursor: str | None
    ) -> tuple[list[RawTableRow], str | None]:
        self.access.require(caller, project, "rawAcl", "LIST")
        after = decode_cursor(cursor).get("a")
        with self.db.read() as s:
            database = self._database(project, db_name, session=s)
            rows = store.list_tables(database.id, session=s, limit=limit, after=after)
        return rows, (encode_cursor({"a": rows[-1].name}) if len(rows) == limit else None)

    def delete_tables(
        self, project: str, caller: Principal, db_name: str, names: list[str]
    ) -> None:
        self.access.require(caller, project, "rawAcl", "WRITE")
        names = _names(names, "Table", MAX_TABLE_NAME)
        with self.db.write() as s:
            database = self._database(project, db_name, session=s)
            found = store.tables(database.id, names, session=s)
            missing = [{"name": n} for n in names if n not in found]
            if missing:
                raise NotFound(f"Tables not found in database {db_name!r}.", missing=missing)
            for n in names:
                store.delete_table(found[n].id, session=s)

    # -- rows -------------------------------------------------------------------------------------
    def insert_rows(
        self,
        project: str,
        caller: Principal,
        db_name: str,
        table_name: str,
        given: list[RowWrite],
        *,
        ensure_parent: bool,
    ) -> None:
        self.access.require(caller, project, "rawAcl", "WRITE")
        if len(given) > MAX_INSERT:
            raise InvalidRequest(f"At most {MAX_INSERT} rows per insert request, got {len(given)}.")
        rows: list[tuple[str, dict[str, Any]]] = []
        for i, row in enumerate(given):
            key, columns = row.key, row.columns
            if not 1 <= len(key) <= MAX_KEY:
                raise InvalidRequest(
                    f"items[{i}]: key must be a string of 1 to {MAX_KEY} characters."
                )
            size = len(json.dumps(columns, separators=(",", ":")))
            if size > MAX_ROW_BYTES:
                raise InvalidRequest(
                    f"items[{i}] (key {key!r}): columns are {size} bytes; at most {MAX_ROW_BYTES}."
                )
            rows.append((key, columns))
        keys = [k for k, _ in rows]
        repeated = sorted(k for k, c in Counter(keys).items() if c > 1)
        if repeated:
            raise Duplicated(
                "Row keys repeated in the request.", duplicated=[{"key": k} for k in repeated]
            )
        if ensure_parent:
            _name(db_name, "Database", MAX_DB_NAME)
            _name(table_name, "Table", MAX_TABLE_NAME)
        with self.db.write() as s:
            if ensure_parent:
                table = self._ensure_table(project, db_name, table_name, session=s)
            else:
                table = self._table(project, db_name, table_name, session=s)
            store.upsert_rows(table.id, rows, now_ms(), session=s)

    def list_rows(
        self,
        project: str,
        caller: Principal,
        db_name: str,
        table_name: str,
        *,
        limit: int,
        cursor: str | None,
        min_updated: int | None,
        max_updated: int | None,
    ) -> RowPage:
        self.access.require(caller, project, "rawAcl", "READ")
        state = decode_cursor(cursor)
        mn = min_updated if min_updated is not None else state.get("mn")
        mx = max_updated if max_updated is not None else state.get("mx")
        with self.db.read() as s:
            table = self._table(project, db_name, table_name, session=s)
            rows = store.list_rows(
                table.id,
                session=s,
                limit=limit,
                after=state.get("a"),
                start=state.get("s"),
                end=state.get("e"),
                min_updated=mn,
                max_updated=mx,
            )
        next_cursor = None
        if len(rows) == limit:
            next_cursor = encode_cursor(
                {"a": rows[-1].key, "e": state.get("e"), "mn": mn, "mx": mx}
            )
        return RowPage(rows, next_cursor)

    def cursors(
        self,
        project: str,
        caller: Principal,
        db_name: str,
        table_name: str,
        *,
        number: int,
        min_updated: int | None,
        max_updated: int | None,
    ) -> list[str]:
        self.access.require(caller, project, "rawAcl", "READ")
        if not 1 <= number <= MAX_CURSORS:
            raise InvalidRequest(
                f"numberOfCursors must be between 1 and {MAX_CURSORS}, got {number}."
            )
        with self.db.read() as s:
            table = self._table(project, db_name, table_name, session=s)
            splits = store.split_keys(
                table.id, number, session=s, min_updated=min_updated, max_updated=max_updated
            )
        bounds: list[str | None] = [None, *splits, None]
        return [
            encode_cursor(
                {"s": bounds[i], "e": bounds[i + 1], "mn": min_updated, "mx": max_updated}
            )
            for i in range(len(bounds) - 1)
        ]

    def get_row(
        self, project: str, caller: Principal, db_name: str, table_name: str, key: str
    ) -> RawRow:
        self.access.require(caller, project, "rawAcl", "READ")
        with self.db.read() as s:
            table = self._table(project, db_name, table_name, session=s)
            row = store.get_row(table.id, key, session=s)
        if row is None:
            raise NotFound(
                f"Row {key!r} not found in {db_name}/{table_name}.", missing=[{"key": key}]
            )
        return row

    def delete_rows(
        self,
        project: str,
        caller: Principal,
        db_name: str,
        table_name: str,
        keys: list[str],
    ) -> None:
        """Delete rows by key; keys that do not exist are ignored, as in CDF."""
        self.access.require(caller, project, "rawAcl", "WRITE")
        if len(keys) > MAX_INSERT:
            raise InvalidRequest(f"At most {MAX_INSERT} keys per delete request, got {len(keys)}.")
        with self.db.write() as s:
            table = self._table(project, db_name, table_name, session=s)
            store.delete_rows(table.id, keys, session=s)
