"""File metadata (the bytes live in the blob store under ``blob_key``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from fnhost.store.base import Base, IdType


class FileRow(Base):
    __tablename__ = "files"
    __table_args__ = (UniqueConstraint("project", "external_id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    external_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(512))
    mime_type: Mapped[str | None] = mapped_column(String(255))
    directory: Mapped[str | None] = mapped_column(String(512))
    source: Mapped[str | None] = mapped_column(String(128))
    data_set_id: Mapped[int | None]
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    uploaded: Mapped[bool] = mapped_column(Boolean, default=False)
    uploaded_time: Mapped[int | None]
    size: Mapped[int | None]
    blob_key: Mapped[str | None] = mapped_column(String(255))
    # random token in the upload URL: the PUT is authorised by the bearer token *and* this
    upload_token: Mapped[str | None] = mapped_column(String(64))
    created_time: Mapped[int]
    last_updated_time: Mapped[int]


def add(row: FileRow, *, session: Session) -> FileRow:
    session.add(row)
    session.flush()
    return row


def get(project: str, file_id: int, *, session: Session) -> FileRow | None:
    row = session.get(FileRow, file_id)
    return row if row is not None and row.project == project else None


def by_external_id(project: str, external_id: str, *, session: Session) -> FileRow | None:
    return session.scalar(
        select(FileRow).where(FileRow.project == project, FileRow.external_id == external_id)
    )


def list_page(
    project: str,
    *,
    session: Session,
    limit: int,
    after_id: int = 0,
    name: str | None = None,
    external_id_prefix: str | None = None,
    uploaded: bool | None = None,
    mime_type: str | None = None,
) -> list[FileRow]:
    q = select(FileRow).where(FileRow.project == project, FileRow.id > after_id)
    if name is not None:
        q = q.where(FileRow.name == name)
    if external_id_prefix is not None:
        q = q.where(FileRow.external_id.startswith(external_id_prefix, autoescape=True))
    if uploaded is not None:
        q = q.where(FileRow.uploaded == uploaded)
    if mime_type is not None:
        q = q.where(FileRow.mime_type == mime_type)
    return list(session.scalars(q.order_by(FileRow.id).limit(limit)))
