"""Schedules of functions, their leases, and the record of every due time they handled.

A replica claims a due schedule by setting ``lease_owner``/``lease_until``; firing a due
time inserts a ``schedule_fires`` row and advances ``next_fire_time`` in one transaction.
The unique ``(schedule_id, scheduled_time)`` makes a second fire of the same due time
impossible, whatever replica tries.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
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


class ScheduleRow(Base):
    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_due", "paused", "next_fire_time"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    # no foreign key: deleting a function deletes its schedules in the same request
    # (``Schedules.delete_for_function``), which also revokes their sessions
    function_id: Mapped[int] = mapped_column(index=True)
    # kept only when the client sent it, so responses echo exactly what was sent
    function_external_id: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(140))
    description: Mapped[str | None] = mapped_column(String(500))
    cron_expression: Mapped[str] = mapped_column(String(1024))
    time_zone: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[Any | None] = mapped_column(JSON)
    session_id: Mapped[int]
    created_time: Mapped[int]
    last_updated_time: Mapped[int]
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    # the next due time not yet handled (ms, UTC); NULL when the expression never fires again
    next_fire_time: Mapped[int | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[int | None]
    last_fire_time: Mapped[int | None]
    last_call_id: Mapped[int | None]
    missed_runs: Mapped[int] = mapped_column(default=0)
    last_missed_time: Mapped[int | None]


class ScheduleFireRow(Base):
    """One handled due time: ``called`` (a call was made), ``failed`` (a Failed call was
    recorded without running, e.g. a revoked session), or ``missed``."""

    __tablename__ = "schedule_fires"
    __table_args__ = (UniqueConstraint("schedule_id", "scheduled_time"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    schedule_id: Mapped[int] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"), index=True)
    scheduled_time: Mapped[int]
    handled_time: Mapped[int]
    outcome: Mapped[str] = mapped_column(String(16))
    call_id: Mapped[int | None]
    # for ``missed``: how many due times this row stands for (down to ``scheduled_time``)
    count: Mapped[int] = mapped_column(default=1)
    message: Mapped[str | None] = mapped_column(Text)
    replica: Mapped[str | None] = mapped_column(String(64))


def add(row: ScheduleRow, *, session: Session) -> ScheduleRow:
    session.add(row)
    session.flush()
    return row


def get(project: str, schedule_id: int, *, session: Session) -> ScheduleRow | None:
    row = session.get(ScheduleRow, schedule_id)
    return row if row is not None and row.project == project else None


def get_for_update(schedule_id: int, *, session: Session) -> ScheduleRow | None:
    q = select(ScheduleRow).where(ScheduleRow.id == schedule_id)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    return session.scalar(q)


def count(project: str, *, session: Session, function_id: int | None = None) -> int:
    q = select(func.count()).select_from(ScheduleRow).where(ScheduleRow.project == project)
    if function_id is not None:
        q = q.where(ScheduleRow.function_id == function_id)
    return session.scalar(q) or 0


def list_filtered(
    project: str,
    *,
    session: Session,
    limit: int,
    name: str | None = None,
    function_id: int | None = None,
    cron_expression: str | None = None,
    created_min: int | None = None,
    created_max: int | None = None,
) -> list[ScheduleRow]:
    q = select(ScheduleRow).where(ScheduleRow.project == project)
    if name is not None:
        q = q.where(ScheduleRow.name == name)
    if function_id is not None:
        q = q.where(ScheduleRow.function_id == function_id)
    if cron_expression is not None:
        q = q.where(ScheduleRow.cron_expression == cron_expression)
    if created_min is not None:
        q = q.where(ScheduleRow.created_time >= created_min)
    if created_max is not None:
        q = q.where(ScheduleRow.created_time <= created_max)
    return list(session.scalars(q.order_by(ScheduleRow.id).limit(limit)))


def for_function(function_id: int, *, session: Session) -> list[ScheduleRow]:
    return list(session.scalars(select(ScheduleRow).where(ScheduleRow.function_id == function_id)))


def delete_rows(ids: list[int], *, session: Session) -> None:
    if ids:
        session.execute(delete(ScheduleFireRow).where(ScheduleFireRow.schedule_id.in_(ids)))
        session.execute(delete(ScheduleRow).where(ScheduleRow.id.in_(ids)))


# -- the scheduler's queries ---------------------------------------------------------------


def claim_due(owner: str, now: int, lease_ms: int, limit: int, *, session: Session) -> list[int]:
    """Lease up to ``limit`` due, unpaused schedules that no live lease holds.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets replicas claim disjoint rows at once.
    SQLite: the write transaction is ``BEGIN IMMEDIATE``, so select-then-update is atomic.
    """
    q = (
        select(ScheduleRow)
        .where(
            ScheduleRow.paused.is_(False),
            ScheduleRow.next_fire_time.is_not(None),
            ScheduleRow.next_fire_time <= now,
            or_(ScheduleRow.lease_until.is_(None), ScheduleRow.lease_until < now),
        )
        .order_by(ScheduleRow.next_fire_time)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update(skip_locked=True)
    rows = list(session.scalars(q))
    for row in rows:
        row.lease_owner = owner
        row.lease_until = now + lease_ms
    return [r.id for r in rows]


def next_due_time(*, session: Session) -> int | None:
    """The earliest due time of any unpaused schedule (leased or not)."""
    return session.scalar(
        select(func.min(ScheduleRow.next_fire_time)).where(
            ScheduleRow.paused.is_(False), ScheduleRow.next_fire_time.is_not(None)
        )
    )


def add_fire(row: ScheduleFireRow, *, session: Session) -> ScheduleFireRow:
    session.add(row)
    session.flush()
    return row


def fire_exists(schedule_id: int, scheduled_time: int, *, session: Session) -> bool:
    q = select(ScheduleFireRow.id).where(
        ScheduleFireRow.schedule_id == schedule_id, ScheduleFireRow.scheduled_time == scheduled_time
    )
    return session.scalar(q) is not None


def fires(schedule_id: int, *, session: Session, limit: int) -> list[ScheduleFireRow]:
    q = (
        select(ScheduleFireRow)
        .where(ScheduleFireRow.schedule_id == schedule_id)
        .order_by(ScheduleFireRow.scheduled_time.desc())
        .limit(limit)
    )
    return list(session.scalars(q))
