"""Project overviews for people: call counts per function and the failed calls.

Read-only and capability-checked like every other service; the web page uses it.
"""

from __future__ import annotations

from fnhost.auth.capabilities import Principal
from fnhost.errors import NotFound
from fnhost.services.access import Access
from fnhost.store import calls as call_store
from fnhost.store import overview as store
from fnhost.store.calls import CallLogRow, CallRow
from fnhost.store.db import Database
from fnhost.store.overview import CallStats


class Overview:
    def __init__(self, db: Database, access: Access) -> None:
        self.db = db
        self.access = access

    def call_stats(
        self, project: str, caller: Principal
    ) -> tuple[dict[int, CallStats], dict[int, CallRow]]:
        """Stats per function id, and each function's newest call."""
        self.access.require(caller, project, "functionsAcl", "READ")
        with self.db.read() as s:
            stats = store.call_stats(project, session=s)
            last = store.calls_by_ids(
                [st.last_call_id for st in stats.values() if st.last_call_id is not None], session=s
            )
        return stats, {c.function_id: c for c in last}

    def failed_calls(
        self, project: str, caller: Principal, *, limit: int = 200, function_id: int | None = None
    ) -> list[tuple[CallRow, str]]:
        self.access.require(caller, project, "functionsAcl", "READ")
        with self.db.read() as s:
            return store.failed_calls(project, session=s, limit=limit, function_id=function_id)

    def recent_calls(
        self, project: str, caller: Principal, function_id: int, *, limit: int = 50
    ) -> list[CallRow]:
        self.access.require(caller, project, "functionsAcl", "READ")
        with self.db.read() as s:
            return call_store.list_page(project, function_id, session=s, limit=limit)

    def call_detail(
        self, project: str, caller: Principal, function_id: int, call_id: int
    ) -> tuple[CallRow, list[CallLogRow]]:
        """A call with its log lines."""
        self.access.require(caller, project, "functionsAcl", "READ")
        with self.db.read() as s:
            row = call_store.get(project, function_id, call_id, session=s)
            if row is None:
                raise NotFound(f"Call {call_id} of function {function_id} does not exist.")
            return row, call_store.logs(call_id, session=s)
