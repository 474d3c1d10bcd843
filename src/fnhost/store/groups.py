"""Groups: capabilities granted in one project to members (client ids or IdP group ids)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from fnhost.store.base import Base, IdType


class GroupRow(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255))
    # an identity provider's group id: tokens whose groups claim holds it are members
    source_id: Mapped[str | None] = mapped_column(String(255), index=True)
    # client ids of the built-in identity provider (or token subjects) that are members
    members: Mapped[list[Any] | None] = mapped_column(JSON)
    capabilities: Mapped[list[Any]] = mapped_column(JSON)
    # the SDK's Group.metadata: string keys and values, kept as given (migration 0003)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, default=None)
    created_time: Mapped[int]


def add(row: GroupRow, *, session: Session) -> GroupRow:
    session.add(row)
    session.flush()
    return row


def list_for_project(project: str, *, session: Session) -> list[GroupRow]:
    return list(session.scalars(select(GroupRow).where(GroupRow.project == project).order_by(GroupRow.id)))


def list_all(*, session: Session) -> list[GroupRow]:
    return list(session.scalars(select(GroupRow).order_by(GroupRow.id)))


def by_name(project: str, name: str, *, session: Session) -> list[GroupRow]:
    return list(
        session.scalars(
            select(GroupRow)
            .where(GroupRow.project == project, GroupRow.name == name)
            .order_by(GroupRow.id)
        )
    )


def get(project: str, group_id: int, *, session: Session) -> GroupRow | None:
    row = session.get(GroupRow, group_id)
    return row if row is not None and row.project == project else None
