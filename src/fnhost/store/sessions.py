"""Sessions: a principal's standing permission to act, redeemed by nonce.

A call or schedule binds a session by its nonce; the server later mints short-lived
tokens for that session (``sid`` claim), so revoking the session stops them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from fnhost.store.base import Base, IdType


class SessionRow(Base):
    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    client_id: Mapped[str | None] = mapped_column(String(255))
    # who acts: {"subject", "issuer", "clientId"?, "groups": [source ids], "admin": bool}
    principal: Mapped[dict[str, Any]] = mapped_column(JSON)
    nonce_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    nonce_expires_time: Mapped[int | None]
    nonce_used: Mapped[bool] = mapped_column(Boolean, default=False)
    parent_session_id: Mapped[int | None]
    depth: Mapped[int] = mapped_column(default=0)
    created_time: Mapped[int]
    expiration_time: Mapped[int]


def add(row: SessionRow, *, session: Session) -> SessionRow:
    session.add(row)
    session.flush()
    return row


def get(project: str, session_id: int, *, session: Session) -> SessionRow | None:
    row = session.get(SessionRow, session_id)
    return row if row is not None and row.project == project else None


def get_any(session_id: int, *, session: Session) -> SessionRow | None:
    return session.get(SessionRow, session_id)


def by_nonce_hash(nonce_hash: str, *, session: Session) -> SessionRow | None:
    return session.scalar(select(SessionRow).where(SessionRow.nonce_hash == nonce_hash))


def list_page(
    project: str,
    *,
    session: Session,
    limit: int,
    after_id: int = 0,
    status: str | None = None,
) -> list[SessionRow]:
    q = select(SessionRow).where(SessionRow.project == project, SessionRow.id > after_id)
    if status is not None:
        q = q.where(SessionRow.status == status)
    return list(session.scalars(q.order_by(SessionRow.id).limit(limit)))
