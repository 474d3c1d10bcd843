"""Read-only summaries of calls across a project (the web page's lists)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from fnhost.store.calls import CallRow
from fnhost.store.functions import FunctionRow

FAILED_STATUSES = ("Failed", "Timeout")


@dataclass(frozen=True)
class CallStats:
    calls: int
    failed: int
    last_call_id: int | None


def call_stats(project: str, *, session: Session) -> dict[int, CallStats]:
    """Per function id: number of calls, failed (or timed out) calls, the newest call's id."""
    failed = func.sum(case((CallRow.status.in_(FAILED_STATUSES), 1), else_=0))
    q = (
        select(CallRow.function_id, func.count(), failed, func.max(CallRow.id))
        .where(CallRow.project == project)
        .group_by(CallRow.function_id)
    )
    return {
        fid: CallStats(int(n), int(f or 0), last)
        for fid, n, f, last in session.execute(q)
    }


def calls_by_ids(ids: list[int], *, session: Session) -> list[CallRow]:
    if not ids:
        return []
    return list(session.scalars(select(CallRow).where(CallRow.id.in_(ids))))


def failed_calls(
    project: str, *, session: Session, limit: int, function_id: int | None = None
) -> list[tuple[CallRow, str]]:
    """Failed and timed-out calls, newest first, with their function's name."""
    q = (
        select(CallRow, FunctionRow.name)
        .join(FunctionRow, FunctionRow.id == CallRow.function_id)
        .where(CallRow.project == project, CallRow.status.in_(FAILED_STATUSES))
    )
    if function_id is not None:
        q = q.where(CallRow.function_id == function_id)
    rows = session.execute(q.order_by(CallRow.id.desc()).limit(limit))
    return [(call, name) for call, name in rows]
