"""A version number of the identity tables (clients, projects, groups).

Every transaction that adds, changes or deletes a client, project or group row bumps it, in
the same transaction, whichever process writes (a server replica or ``fnhost admin``). A
reader that cached what it read under version N may keep using it while the version is
still N: one indexed read of one row instead of re-reading the tables on every request.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, event, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from fnhost.store.base import Base

ROW_ID = 1


class IdentityVersionRow(Base):
    __tablename__ = "identity_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


def current(*, session: Session) -> int:
    value = session.execute(
        text("SELECT version FROM identity_version WHERE id = :id"), {"id": ROW_ID}
    ).scalar()
    return int(value or 0)


def bump(*, session: Session) -> None:
    updated = session.execute(
        text("UPDATE identity_version SET version = version + 1 WHERE id = :id"), {"id": ROW_ID}
    )
    if updated.rowcount == 0:  # type: ignore[attr-defined]
        session.execute(
            text("INSERT INTO identity_version (id, version) VALUES (:id, 1)"), {"id": ROW_ID}
        )


def _identity_classes() -> tuple[type, ...]:
    from fnhost.store.clients import ClientRow
    from fnhost.store.groups import GroupRow
    from fnhost.store.projects import ProjectRow

    return (ClientRow, GroupRow, ProjectRow)


@event.listens_for(Session, "before_flush")
def _bump_on_identity_change(session: Session, _context: Any, _instances: Any) -> None:
    classes = _identity_classes()
    changed = (*session.new, *session.deleted, *(o for o in session.dirty if session.is_modified(o)))
    if any(isinstance(o, classes) for o in changed):
        bump(session=session)
