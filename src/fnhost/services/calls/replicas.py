"""Replicas and their calls: every replica records that it is alive, and fails the calls a
stopped one left Running (so every accepted call ends, even across a crash)."""

from __future__ import annotations

import logging

from fnhost.clock import now_ms
from fnhost.core.replicas import owner_is_dead
from fnhost.statuses import CallStatus
from fnhost.store import calls as store
from fnhost.store import replicas as replica_store
from fnhost.store.db import Database

log = logging.getLogger("fnhost.calls")


class Replicas:
    def __init__(self, db: Database, replica_id: str, dead_after_seconds: float) -> None:
        self.db = db
        self.replica_id = replica_id
        self.dead_after_seconds = dead_after_seconds

    def heartbeat(self) -> None:
        """Tell the other replicas this one is alive (see ``store.replicas``)."""
        with self.db.write() as s:
            replica_store.beat(self.replica_id, now_ms(), session=s)

    def leave(self) -> None:
        """A clean stop: this replica's calls are recorded, so it leaves no orphans."""
        with self.db.write() as s:
            replica_store.remove([self.replica_id], session=s)

    def recover(self) -> int:
        """Calls left Running by a replica that is gone fail with a message saying so.

        Gone: no heartbeat for ``replica_dead_after_seconds`` (or no row at all), or, on this
        host, its process no longer exists. Every replica checks periodically, so a replica
        killed mid-call (SIGKILL, lost machine) has its calls failed by the others.
        """
        now = now_ms()
        since = now - int(self.dead_after_seconds * 1000)
        count = 0
        gone: set[str] = set()
        with self.db.write() as s:
            live = replica_store.live_ids(since, session=s)
            for row in store.running_owned_by(None, session=s):
                owner = row.owner
                if owner == self.replica_id:
                    continue
                # on this host a missing process is a dead replica at once; elsewhere, its heartbeat tells
                if owner is not None and owner in live and not owner_is_dead(owner, shared_with_other_hosts=True):
                    continue
                row.status = CallStatus.FAILED
                row.end_time = max(now, row.start_time)
                row.error = {"message": "The server running this call stopped before the call ended.", "trace": ""}
                count += 1
                if owner is not None:
                    gone.add(owner)
            gone |= replica_store.stale_ids(since, session=s)
            gone.discard(self.replica_id)
            replica_store.remove(gone, session=s)
        if count:
            log.warning("failed %d call(s) left Running by stopped replica(s) %s", count, ", ".join(sorted(gone)))
        return count
