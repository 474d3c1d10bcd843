"""Calls of functions and their log lines."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import JSON, ForeignKey, Index, String, Table, Text, delete, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from fnhost.store.base import Base, IdType


class CallRow(Base):
    __tablename__ = "calls"
    __table_args__ = (Index("ix_calls_function_id_id", "function_id", "id"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    function_id: Mapped[int] = mapped_column(ForeignKey("functions.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), index=True)
    start_time: Mapped[int]
    end_time: Mapped[int | None]
    scheduled_time: Mapped[int | None]
    schedule_id: Mapped[int | None] = mapped_column(index=True)
    session_id: Mapped[int | None]
    data: Mapped[Any | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # the handler's return value, JSON-encoded; NULL until the call completes
    response: Mapped[str | None] = mapped_column(Text)
    # which server process runs it: lets a restarted or surviving replica fail orphans
    owner: Mapped[str | None] = mapped_column(String(64), index=True)
    # when the executor actually started it (after waiting for Ready or a free slot)
    run_start_time: Mapped[int | None]
    # what it used (``run.protocol.Usage``), and when it left the waiting line for the executor
    dispatch_time: Mapped[int | None]
    cpu_user_ms: Mapped[int | None]
    cpu_system_ms: Mapped[int | None]
    peak_memory_bytes: Mapped[int | None]
    # the function's version the call was accepted on, and runs
    function_version: Mapped[int | None]


class CallLogRow(Base):
    __tablename__ = "call_logs"
    __table_args__ = (Index("ix_call_logs_call_id_seq", "call_id", "seq"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    seq: Mapped[int]
    timestamp: Mapped[int]
    message: Mapped[str] = mapped_column(Text)


def _table(model: type) -> Table:
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


def insert_call(values: dict[str, Any], *, session: Session) -> int:
    """A call's row from its column values; its id. A Core INSERT: the hot path makes one per
    call, and an ORM object would cost more than the statement."""
    result = session.execute(insert(_table(CallRow)).values(**values))
    return int(result.inserted_primary_key[0])  # type: ignore[attr-defined]


def record_end(
    call_id: int,
    *,
    status: str,
    end_time: int,
    run_start_time: int | None,
    error: dict[str, Any] | None,
    response: str | None,
    usage: dict[str, int | None] | None = None,
    session: Session,
) -> bool:
    """End a call that is still Running; False if it had ended already (recovered, say).
    ``usage``: the ``dispatch_time``, ``cpu_*_ms`` and ``peak_memory_bytes`` columns."""
    t = _table(CallRow)
    result = session.execute(
        update(t)
        .where(t.c.id == call_id, t.c.status == "Running")
        .values(
            status=status, end_time=end_time, run_start_time=run_start_time, error=error, response=response,
            **(usage or {}),
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def add(row: CallRow, *, session: Session) -> CallRow:
    session.add(row)
    session.flush()
    return row


def get(project: str, function_id: int, call_id: int, *, session: Session) -> CallRow | None:
    row = session.get(CallRow, call_id)
    if row is None or row.project != project or row.function_id != function_id:
        return None
    return row


def get_any(call_id: int, *, session: Session) -> CallRow | None:
    return session.get(CallRow, call_id)


def list_page(
    project: str,
    function_id: int,
    *,
    session: Session,
    limit: int,
    before_id: int | None = None,
    status: str | None = None,
    schedule_id: int | None = None,
    start_min: int | None = None,
    start_max: int | None = None,
    end_min: int | None = None,
    end_max: int | None = None,
) -> list[CallRow]:
    """Newest first, as the seed's platform lists calls."""
    q = select(CallRow).where(CallRow.project == project, CallRow.function_id == function_id)
    if before_id is not None:
        q = q.where(CallRow.id < before_id)
    if status is not None:
        q = q.where(CallRow.status == status)
    if schedule_id is not None:
        q = q.where(CallRow.schedule_id == schedule_id)
    if start_min is not None:
        q = q.where(CallRow.start_time >= start_min)
    if start_max is not None:
        q = q.where(CallRow.start_time <= start_max)
    if end_min is not None:
        q = q.where(CallRow.end_time >= end_min)
    if end_max is not None:
        q = q.where(CallRow.end_time <= end_max)
    return list(session.scalars(q.order_by(CallRow.id.desc()).limit(limit)))


def running_owned_by(owner: str | None, *, session: Session) -> list[CallRow]:
    q = select(CallRow).where(CallRow.status == "Running")
    if owner is not None:
        q = q.where(CallRow.owner == owner)
    return list(session.scalars(q))


def add_logs(call_id: int, first_seq: int, lines: list[tuple[int, str]], *, session: Session) -> None:
    if not lines:
        return
    session.execute(
        insert(_table(CallLogRow)),
        [{"call_id": call_id, "seq": first_seq + i, "timestamp": ts, "message": msg} for i, (ts, msg) in enumerate(lines)],
    )


def logs(call_id: int, *, session: Session, after_seq: int = -1) -> list[CallLogRow]:
    q = (
        select(CallLogRow)
        .where(CallLogRow.call_id == call_id, CallLogRow.seq > after_seq)
        .order_by(CallLogRow.seq)
    )
    return list(session.scalars(q))


def delete_for_function(function_id: int, *, session: Session) -> None:
    call_ids = select(CallRow.id).where(CallRow.function_id == function_id)
    session.execute(delete(CallLogRow).where(CallLogRow.call_id.in_(call_ids)))
    session.execute(delete(CallRow).where(CallRow.function_id == function_id))
