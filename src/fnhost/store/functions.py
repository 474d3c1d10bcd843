"""Functions: deployed code, its settings and its build state."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from fnhost.store.base import Base, IdType, claim_first


class FunctionRow(Base):
    __tablename__ = "functions"
    __table_args__ = (
        UniqueConstraint("project", "external_id"),
        Index("ix_functions_status_lease", "status", "build_lease_until"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(64), ForeignKey("projects.name"), index=True)
    external_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(140))
    description: Mapped[str | None] = mapped_column(String(500))
    owner: Mapped[str | None] = mapped_column(String(128))
    file_id: Mapped[int]
    function_path: Mapped[str] = mapped_column(String(500), default="handler.py")
    # Fernet token of the JSON secrets dict; names kept apart so responses can mask them.
    secrets_encrypted: Mapped[str | None] = mapped_column(Text)
    secret_names: Mapped[list[Any] | None] = mapped_column(JSON)
    env_vars: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    cpu: Mapped[float] = mapped_column(Float)
    memory: Mapped[float] = mapped_column(Float)
    runtime: Mapped[str] = mapped_column(String(16))
    runtime_version: Mapped[str | None] = mapped_column(String(64))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    index_url: Mapped[str | None] = mapped_column(String(2048))
    extra_index_urls: Mapped[list[Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    env_hash: Mapped[str | None] = mapped_column(String(64))
    created_time: Mapped[int]
    last_called: Mapped[int | None]
    # Build claim: a builder (in any replica) owns a Queued/Deploying function until then.
    build_owner: Mapped[str | None] = mapped_column(String(64))
    build_lease_until: Mapped[int | None]
    ready_time: Mapped[int | None]
    # the current version (``store/versions.py``): the columns above that a version sets
    # (code, settings, build) are the current version's
    version: Mapped[int] = mapped_column(default=1, server_default="1")
    # why the newest version failed to build while an older one stays current (None else)
    version_error: Mapped[dict[str, Any] | None] = mapped_column(JSON)


def add(row: FunctionRow, *, session: Session) -> FunctionRow:
    session.add(row)
    session.flush()
    return row


def get(project: str, function_id: int, *, session: Session) -> FunctionRow | None:
    row = session.get(FunctionRow, function_id)
    return row if row is not None and row.project == project else None


def get_any(function_id: int, *, session: Session) -> FunctionRow | None:
    return session.get(FunctionRow, function_id)


def mark_called(function_id: int, called_at: int, *, session: Session) -> None:
    """Set ``last_called`` without loading the row (every call's end does this)."""
    table = cast(Table, FunctionRow.__table__)  # a Core UPDATE: the ORM's bulk-update bookkeeping costs more here
    session.execute(update(table).where(table.c.id == function_id).values(last_called=called_at))


def by_external_id(project: str, external_id: str, *, session: Session) -> FunctionRow | None:
    return session.scalar(
        select(FunctionRow).where(
            FunctionRow.project == project, FunctionRow.external_id == external_id
        )
    )


def count(project: str, *, session: Session) -> int:
    return session.scalar(
        select(func.count()).select_from(FunctionRow).where(FunctionRow.project == project)
    ) or 0


def list_filtered(
    project: str,
    *,
    session: Session,
    limit: int,
    name: str | None = None,
    owner: str | None = None,
    file_id: int | None = None,
    status: str | None = None,
    external_id_prefix: str | None = None,
    created_min: int | None = None,
    created_max: int | None = None,
) -> list[FunctionRow]:
    q = select(FunctionRow).where(FunctionRow.project == project)
    if name is not None:
        q = q.where(FunctionRow.name == name)
    if owner is not None:
        q = q.where(FunctionRow.owner == owner)
    if file_id is not None:
        q = q.where(FunctionRow.file_id == file_id)
    if status is not None:
        q = q.where(FunctionRow.status == status)
    if external_id_prefix is not None:
        q = q.where(FunctionRow.external_id.startswith(external_id_prefix, autoescape=True))
    if created_min is not None:
        q = q.where(FunctionRow.created_time >= created_min)
    if created_max is not None:
        q = q.where(FunctionRow.created_time <= created_max)
    return list(session.scalars(q.order_by(FunctionRow.id).limit(limit)))


def claim_next_build(owner: str, now: int, lease_ms: int, *, session: Session) -> FunctionRow | None:
    """Claim one function that waits for a build (or whose builder's lease ran out)."""
    q = (
        select(FunctionRow)
        .where(
            FunctionRow.status.in_(("Queued", "Deploying")),
            (FunctionRow.build_lease_until.is_(None)) | (FunctionRow.build_lease_until < now),
        )
        .order_by(FunctionRow.id)
    )
    return claim_first(q, owner, now, lease_ms, session=session)


def builds_in_progress(*, session: Session) -> list[FunctionRow]:
    return list(session.scalars(select(FunctionRow).where(FunctionRow.status == "Deploying")))


def ready_functions(*, session: Session) -> list[FunctionRow]:
    return list(session.scalars(select(FunctionRow).where(FunctionRow.status == "Ready")))
