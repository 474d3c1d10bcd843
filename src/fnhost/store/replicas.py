"""Server replicas and their heartbeats: how one replica knows another is gone.

Every ``fnhost serve`` process writes its row at start and renews ``heartbeat_time`` every
few seconds. A replica whose heartbeat is older than the dead-after window (or whose row is
missing) is gone: any live replica fails the calls it left ``Running`` and deletes its row.
"""

from __future__ import annotations

from sqlalchemy import String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from fnhost.store.base import Base


class ReplicaRow(Base):
    __tablename__ = "replicas"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # host-pid-random
    started_time: Mapped[int]
    heartbeat_time: Mapped[int]


def beat(replica_id: str, now: int, *, session: Session) -> None:
    row = session.get(ReplicaRow, replica_id)
    if row is None:
        session.add(ReplicaRow(id=replica_id, started_time=now, heartbeat_time=now))
    else:
        row.heartbeat_time = max(row.heartbeat_time, now)


def live_ids(since: int, *, session: Session) -> set[str]:
    """Replicas that beat at or after ``since`` (ms)."""
    return set(session.scalars(select(ReplicaRow.id).where(ReplicaRow.heartbeat_time >= since)))


def remove(replica_ids: set[str] | list[str], *, session: Session) -> None:
    if replica_ids:
        session.execute(delete(ReplicaRow).where(ReplicaRow.id.in_(list(replica_ids))))


def stale_ids(before: int, *, session: Session) -> set[str]:
    return set(session.scalars(select(ReplicaRow.id).where(ReplicaRow.heartbeat_time < before)))
