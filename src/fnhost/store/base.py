"""Declarative base and column types shared by every table module."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from sqlalchemy import JSON, BigInteger, Integer, MetaData, Select
from sqlalchemy.orm import DeclarativeBase, Session

# Integer primary keys: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite so
# that SQLite assigns ids itself.
IdType = BigInteger().with_variant(Integer(), "sqlite")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, int: BigInteger}


class Leased(Protocol):
    build_owner: Any
    build_lease_until: Any


L = TypeVar("L", bound=Leased)


def claim_first(query: Select[L], owner: str, now: int, lease_ms: int, *, session: Session) -> L | None:
    """The first row of ``query`` (rows waiting for a build, or whose builder's lease ran
    out), leased to ``owner``. On PostgreSQL, rows another replica is claiming are skipped
    rather than waited for."""
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    row = session.scalar(query.limit(1))
    if row is None:
        return None
    row.build_owner = owner
    row.build_lease_until = now + lease_ms
    return row
