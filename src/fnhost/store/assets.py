"""Assets: named objects in hierarchies (trees), each with optional metadata.

Each row keeps its materialised ``path`` (``/<root id>/…/<own id>/``), so a subtree is a
prefix match, a move rewrites the prefix of the moved rows, and a cycle check is "is the
new parent inside my own path".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    ForeignKey,
    Index,
    Select,
    String,
    Text,
    UniqueConstraint,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from fnhost.store.base import Base, IdType

# SQLite binds at most 32766 parameters per statement; stay well below it.
IN_CHUNK = 900


class AssetRow(Base):
    __tablename__ = "assets"
    __table_args__ = (
        UniqueConstraint("project", "external_id"),
        Index("ix_assets_project_parent", "project", "parent_id"),
        Index("ix_assets_project_root", "project", "root_id"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(64), ForeignKey("projects.name"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(140))
    parent_id: Mapped[int | None]
    root_id: Mapped[int | None]
    depth: Mapped[int] = mapped_column(default=0)
    path: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str | None] = mapped_column(Text)
    data_set_id: Mapped[int | None]
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    source: Mapped[str | None] = mapped_column(String(128))
    labels: Mapped[list[Any] | None] = mapped_column(JSON)
    geo_location: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_time: Mapped[int]
    last_updated_time: Mapped[int]


@dataclass
class AssetQuery:
    """A list/aggregate filter, already validated by the domain layer."""

    name: str | None = None
    parent_ids: list[int] | None = None
    subtree_paths: list[str] | None = None
    data_set_ids: list[int] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    created_min: int | None = None
    created_max: int | None = None
    updated_min: int | None = None
    updated_max: int | None = None
    root: bool | None = None
    external_id_prefix: str | None = None
    not_null: list[str] = field(default_factory=list)
    # (index, count): the rows whose id % count == index
    partition: tuple[int, int] | None = None


NULLABLE_COLUMNS = {
    "externalId": AssetRow.external_id,
    "parentId": AssetRow.parent_id,
    "description": AssetRow.description,
    "dataSetId": AssetRow.data_set_id,
    "metadata": AssetRow.metadata_,
    "source": AssetRow.source,
    "labels": AssetRow.labels,
    "geoLocation": AssetRow.geo_location,
}


def _filtered(q: Select[Any], project: str, f: AssetQuery) -> Select[Any]:
    q = q.where(AssetRow.project == project)
    if f.name is not None:
        q = q.where(AssetRow.name == f.name)
    if f.parent_ids is not None:
        q = q.where(AssetRow.parent_id.in_(f.parent_ids))
    if f.subtree_paths is not None:
        q = q.where(or_(*[AssetRow.path.startswith(p, autoescape=True) for p in f.subtree_paths]))
    if f.data_set_ids is not None:
        q = q.where(AssetRow.data_set_id.in_(f.data_set_ids))
    for key, value in f.metadata.items():
        q = q.where(AssetRow.metadata_[key].as_string() == value)
    if f.source is not None:
        q = q.where(AssetRow.source == f.source)
    if f.created_min is not None:
        q = q.where(AssetRow.created_time >= f.created_min)
    if f.created_max is not None:
        q = q.where(AssetRow.created_time <= f.created_max)
    if f.updated_min is not None:
        q = q.where(AssetRow.last_updated_time >= f.updated_min)
    if f.updated_max is not None:
        q = q.where(AssetRow.last_updated_time <= f.updated_max)
    if f.root is True:
        q = q.where(AssetRow.parent_id.is_(None))
    elif f.root is False:
        q = q.where(AssetRow.parent_id.is_not(None))
    if f.external_id_prefix is not None:
        q = q.where(AssetRow.external_id.startswith(f.external_id_prefix, autoescape=True))
    for prop in f.not_null:
        q = q.where(NULLABLE_COLUMNS[prop].is_not(None))
    if f.partition is not None:
        index, count = f.partition
        q = q.where(AssetRow.id % count == index)
    return q


def list_page(
    project: str, f: AssetQuery, *, session: Session, limit: int, after_id: int = 0
) -> list[AssetRow]:
    q = _filtered(select(AssetRow), project, f).where(AssetRow.id > after_id)
    return list(session.scalars(q.order_by(AssetRow.id).limit(limit)))


def count(project: str, f: AssetQuery, *, session: Session) -> int:
    return int(session.scalar(_filtered(select(func.count(AssetRow.id)), project, f)) or 0)


def search(
    project: str, f: AssetQuery, terms: Sequence[str], *, session: Session, limit: int
) -> list[AssetRow]:
    """Assets whose name or description contains every term (case-insensitive)."""
    q = _filtered(select(AssetRow), project, f)
    for term in terms:
        like = f"%{term.lower()}%"
        q = q.where(
            or_(func.lower(AssetRow.name).like(like), func.lower(AssetRow.description).like(like))
        )
    return list(session.scalars(q.order_by(AssetRow.id).limit(limit)))


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(values), IN_CHUNK):
        yield values[i : i + IN_CHUNK]


def by_ids(project: str, ids: Sequence[int], *, session: Session) -> dict[int, AssetRow]:
    out: dict[int, AssetRow] = {}
    for chunk in _chunks(list(set(ids))):
        q = select(AssetRow).where(AssetRow.project == project, AssetRow.id.in_(chunk))
        out.update({r.id: r for r in session.scalars(q)})
    return out


def by_external_ids(
    project: str, external_ids: Sequence[str], *, session: Session
) -> dict[str, AssetRow]:
    out: dict[str, AssetRow] = {}
    for chunk in _chunks(list(set(external_ids))):
        q = select(AssetRow).where(AssetRow.project == project, AssetRow.external_id.in_(chunk))
        out.update({r.external_id: r for r in session.scalars(q) if r.external_id is not None})
    return out


def subtree(project: str, path: str, *, session: Session) -> list[AssetRow]:
    """Every asset under ``path`` (the asset itself included), shallowest first."""
    q = select(AssetRow).where(
        AssetRow.project == project, AssetRow.path.startswith(path, autoescape=True)
    )
    return list(session.scalars(q.order_by(AssetRow.depth, AssetRow.id)))


def child_counts(project: str, ids: Sequence[int], *, session: Session) -> dict[int, int]:
    out: dict[int, int] = {}
    for chunk in _chunks(list(set(ids))):
        q = (
            select(AssetRow.parent_id, func.count(AssetRow.id))
            .where(AssetRow.project == project, AssetRow.parent_id.in_(chunk))
            .group_by(AssetRow.parent_id)
        )
        out.update({int(pid): int(n) for pid, n in session.execute(q) if pid is not None})
    return out


def children_outside(project: str, ids: Sequence[int], *, session: Session) -> list[AssetRow]:
    """Children of ``ids`` that are not themselves in ``ids`` (blockers of a plain delete)."""
    wanted = set(ids)
    out: list[AssetRow] = []
    for chunk in _chunks(list(wanted)):
        q = select(AssetRow).where(AssetRow.project == project, AssetRow.parent_id.in_(chunk))
        out.extend(r for r in session.scalars(q) if r.id not in wanted)
    return out


def external_ids_of(project: str, ids: Sequence[int], *, session: Session) -> dict[int, str]:
    out: dict[int, str] = {}
    for chunk in _chunks(list(set(ids))):
        q = select(AssetRow.id, AssetRow.external_id).where(
            AssetRow.project == project, AssetRow.id.in_(chunk), AssetRow.external_id.is_not(None)
        )
        out.update({int(i): str(x) for i, x in session.execute(q)})
    return out


def delete_ids(project: str, ids: Sequence[int], *, session: Session) -> None:
    for chunk in _chunks(list(set(ids))):
        session.execute(delete(AssetRow).where(AssetRow.project == project, AssetRow.id.in_(chunk)))
