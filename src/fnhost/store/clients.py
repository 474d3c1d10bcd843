"""Service clients of the built-in identity provider (client id + hashed secret)."""

from __future__ import annotations

from sqlalchemy import Boolean, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from fnhost.store.base import Base, IdType


class ClientRow(Base):
    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    # scrypt hash "scrypt$<salt hex>$<hash hex>"; the secret itself is never stored
    secret_hash: Mapped[str] = mapped_column(String(256))
    # Admins hold every capability in every project; others get theirs from groups.
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_time: Mapped[int]


def by_client_id(client_id: str, *, session: Session) -> ClientRow | None:
    return session.scalar(select(ClientRow).where(ClientRow.client_id == client_id))


def add(row: ClientRow, *, session: Session) -> ClientRow:
    session.add(row)
    session.flush()
    return row


def list_all(*, session: Session) -> list[ClientRow]:
    return list(session.scalars(select(ClientRow).order_by(ClientRow.id)))


def delete(client_id: str, *, session: Session) -> bool:
    row = by_client_id(client_id, session=session)
    if row is None:
        return False
    session.delete(row)
    return True
