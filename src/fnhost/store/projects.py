"""Projects: the tenancy boundary. Every other row belongs to exactly one project."""

from __future__ import annotations

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from fnhost.clock import now_ms
from fnhost.store.base import Base


class ProjectRow(Base):
    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_time: Mapped[int]


def get(name: str, *, session: Session) -> ProjectRow | None:
    return session.get(ProjectRow, name)


def ensure(name: str, *, session: Session) -> ProjectRow:
    row = session.get(ProjectRow, name)
    if row is None:
        row = ProjectRow(name=name, created_time=now_ms())
        session.add(row)
        session.flush()
    return row


def list_all(*, session: Session) -> list[ProjectRow]:
    return list(session.scalars(select(ProjectRow).order_by(ProjectRow.name)))


def delete(name: str, *, session: Session) -> bool:
    row = session.get(ProjectRow, name)
    if row is None:
        return False
    session.delete(row)
    return True
