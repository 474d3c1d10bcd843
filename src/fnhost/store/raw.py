"""RAW: databases of tables of rows; a row is a key and a JSON object of columns."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Select,
    String,
    UniqueConstraint,
    delete,
    func,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from fnhost.store.base import Base, IdType

IN_CHUNK = 900


class RawDatabaseRow(Base):
    __tablename__ = "raw_databases"
    __table_args__ = (UniqueConstraint("project", "name"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(64), ForeignKey("projects.name"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    created_time: Mapped[int]


class RawTableRow(Base):
    __tablename__ = "raw_tables"
    __table_args__ = (UniqueConstraint("database_id", "name"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    database_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("raw_databases.id", ondelete="CASCADE")
    )
    name: Mapped[str] = mapped_column(String(128))
    created_time: Mapped[int]


class RawRow(Base):
    __tablename__ = "raw_rows"
    __table_args__ = (Index("ix_raw_rows_table_updated", "table_id", "last_updated_time"),)

    table_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("raw_tables.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    columns: Mapped[dict[str, Any]] = mapped_column(JSON)
    last_updated_time: Mapped[int]


# -- databases and tables -----------------------------------------------------------------


def database(project: str, name: str, *, session: Session) -> RawDatabaseRow | None:
    return session.scalar(
        select(RawDatabaseRow).where(RawDatabaseRow.project == project, RawDatabaseRow.name == name)
    )


def databases(project: str, names: list[str], *, session: Session) -> dict[str, RawDatabaseRow]:
    q = select(RawDatabaseRow).where(
        RawDatabaseRow.project == project, RawDatabaseRow.name.in_(names)
    )
    return {r.name: r for r in session.scalars(q)}


def list_databases(
    project: str, *, session: Session, limit: int, after: str | None
) -> list[RawDatabaseRow]:
    q = select(RawDatabaseRow).where(RawDatabaseRow.project == project)
    if after is not None:
        q = q.where(RawDatabaseRow.name > after)
    return list(session.scalars(q.order_by(RawDatabaseRow.name).limit(limit)))


def table(database_id: int, name: str, *, session: Session) -> RawTableRow | None:
    return session.scalar(
        select(RawTableRow).where(RawTableRow.database_id == database_id, RawTableRow.name == name)
    )


def tables(database_id: int, names: list[str], *, session: Session) -> dict[str, RawTableRow]:
    q = select(RawTableRow).where(
        RawTableRow.database_id == database_id, RawTableRow.name.in_(names)
    )
    return {r.name: r for r in session.scalars(q)}


def count_tables(database_id: int, *, session: Session) -> int:
    q = select(func.count()).select_from(RawTableRow).where(RawTableRow.database_id == database_id)
    return int(session.scalar(q) or 0)


def list_tables(
    database_id: int, *, session: Session, limit: int, after: str | None
) -> list[RawTableRow]:
    q = select(RawTableRow).where(RawTableRow.database_id == database_id)
    if after is not None:
        q = q.where(RawTableRow.name > after)
    return list(session.scalars(q.order_by(RawTableRow.name).limit(limit)))


def delete_table(table_id: int, *, session: Session) -> None:
    # explicit, so that no database relies on ON DELETE CASCADE being switched on
    session.execute(delete(RawRow).where(RawRow.table_id == table_id))
    session.execute(delete(RawTableRow).where(RawTableRow.id == table_id))


def delete_database(database_id: int, *, session: Session) -> None:
    ids = list(
        session.scalars(select(RawTableRow.id).where(RawTableRow.database_id == database_id))
    )
    for table_id in ids:
        delete_table(table_id, session=session)
    session.execute(delete(RawDatabaseRow).where(RawDatabaseRow.id == database_id))


# -- rows ----------------------------------------------------------------------------------


def upsert_rows(
    table_id: int, rows: list[tuple[str, dict[str, Any]]], now: int, *, session: Session
) -> None:
    """Insert or replace whole rows (keys are unique within ``rows``)."""
    keys = [k for k, _ in rows]
    existing: dict[str, RawRow] = {}
    for i in range(0, len(keys), IN_CHUNK):
        q = select(RawRow).where(
            RawRow.table_id == table_id, RawRow.key.in_(keys[i : i + IN_CHUNK])
        )
        existing.update({r.key: r for r in session.scalars(q)})
    for key, columns in rows:
        row = existing.get(key)
        if row is None:
            session.add(RawRow(table_id=table_id, key=key, columns=columns, last_updated_time=now))
        else:
            row.columns = columns
            row.last_updated_time = now
    session.flush()


def get_row(table_id: int, key: str, *, session: Session) -> RawRow | None:
    return session.get(RawRow, (table_id, key))


def delete_rows(table_id: int, keys: list[str], *, session: Session) -> None:
    for i in range(0, len(keys), IN_CHUNK):
        session.execute(
            delete(RawRow).where(
                RawRow.table_id == table_id, RawRow.key.in_(keys[i : i + IN_CHUNK])
            )
        )


def _rows_where(
    q: Select[Any],
    table_id: int,
    *,
    after: str | None = None,
    start: str | None = None,
    end: str | None = None,
    min_updated: int | None = None,
    max_updated: int | None = None,
) -> Select[Any]:
    q = q.where(RawRow.table_id == table_id)
    if after is not None:
        q = q.where(RawRow.key > after)
    if start is not None:
        q = q.where(RawRow.key >= start)
    if end is not None:
        q = q.where(RawRow.key < end)
    if min_updated is not None:  # exclusive, as in CDF
        q = q.where(RawRow.last_updated_time > min_updated)
    if max_updated is not None:  # inclusive
        q = q.where(RawRow.last_updated_time <= max_updated)
    return q


def list_rows(table_id: int, *, session: Session, limit: int, **bounds: Any) -> list[RawRow]:
    q = _rows_where(select(RawRow), table_id, **bounds)
    return list(session.scalars(q.order_by(RawRow.key).limit(limit)))


def split_keys(table_id: int, parts: int, *, session: Session, **bounds: Any) -> list[str]:
    """Up to ``parts - 1`` keys that split the matching rows into ranges of about equal size."""
    total = int(
        session.scalar(_rows_where(select(func.count()).select_from(RawRow), table_id, **bounds))
        or 0
    )
    out: list[str] = []
    for i in range(1, parts):
        offset = total * i // parts
        if offset <= 0 or offset >= total:
            continue
        q = (
            _rows_where(select(RawRow.key), table_id, **bounds)
            .order_by(RawRow.key)
            .offset(offset)
            .limit(1)
        )
        key = session.scalar(q)
        if key is not None and (not out or key > out[-1]):
            out.append(key)
    return out
