"""``/functions/{id}/call`` and ``…/calls/…`` bodies. The call's body is on the call path:
a flat model, parsed with ``wire.parse`` on the body the endpoint decoded itself."""

from __future__ import annotations

from typing import Any

from fnhost.api.models.common import Cursor, Id, Limit, TimeRange
from fnhost.api.wire import WireModel
from fnhost.services.calls import CallFilter, CallRequest


class CallBody(WireModel):
    """``{"data": {...}, "nonce": "..."}`` (either may be left out)."""

    data: dict[str, Any] | None = None
    nonce: str | None = None

    def request(self) -> CallRequest:
        return CallRequest(data=self.data, nonce=self.nonce)


class CallFilterIn(WireModel):
    status: str | None = None
    schedule_id: Id | None = None
    start_time: TimeRange | None = None
    end_time: TimeRange | None = None

    def filter(self) -> CallFilter:
        start, end = self.start_time or TimeRange(), self.end_time or TimeRange()
        return CallFilter(
            status=self.status,
            schedule_id=self.schedule_id,
            start_min=start.min,
            start_max=start.max,
            end_min=end.min,
            end_max=end.max,
        )


class CallsList(WireModel):
    filter: CallFilterIn | None = None
    limit: Limit | None = None
    cursor: Cursor | None = None
