"""Blob bytes kept in the database, for replicas that share nothing but the database."""

from __future__ import annotations

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from fnhost.store.base import Base


class BlobRow(Base):
    __tablename__ = "blobs"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    size: Mapped[int]
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_time: Mapped[int]
