"""Recording a call's end: the last part of the call path.

In one transaction: the outcome (status, times, error, response) on the call's row, which
must still be Running; its log lines; the function's ``lastCalled``. Then, in this order, the
live log stream ends, waiters in this process get the ended call (no read back), and the
metrics count it. A failure to record is logged; the call's waiters then re-read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fnhost.clock import now_ms
from fnhost.core.livelogs import LiveLogs
from fnhost.metrics import Metrics
from fnhost.run.abc import CallOutcome
from fnhost.services.calls.view import CallView, InFlight
from fnhost.services.calls.wait import Waiters
from fnhost.statuses import CallStatus, call_moves
from fnhost.store.db import Database, WouldWait, without_waiting
from fnhost.store.direct import Direct

log = logging.getLogger("fnhost.calls")


def usage_columns(call: InFlight, outcome: CallOutcome) -> dict[str, int | None]:
    """What a call used, as the calls table keeps it (milliseconds, bytes)."""
    usage = outcome.usage
    return {
        "dispatch_time": call.submitted_ms,
        "cpu_user_ms": round(usage.cpu_user_s * 1000) if usage else None,
        "cpu_system_ms": round(usage.cpu_system_s * 1000) if usage else None,
        "peak_memory_bytes": usage.peak_memory_bytes if usage else None,
    }


class Recorder:
    def __init__(self, db: Database, waiters: Waiters, live: LiveLogs, metrics: Metrics | None = None) -> None:
        self.db = db
        self.direct = Direct(db)
        self.waiters = waiters
        self.live = live
        self.metrics = metrics
        self.on_recorded: list[Callable[[InFlight], None]] = []  # the dispatcher frees its slot

    def finish(self, call: InFlight, outcome: CallOutcome) -> None:
        """Record how ``call`` ended. Never raises."""
        ended: CallView | None = None
        try:
            ended = self._write(call, outcome)
        except Exception:
            log.exception("the outcome of call %s could not be recorded", call.id)
        finally:
            self._announce(call, outcome, ended)

    def finish_without_waiting(self, call: InFlight, outcome: CallOutcome) -> bool:
        """``finish`` on an event loop, if its write can start at once (``db.quick`` and
        the write turn free); False, having done nothing, if it would have to wait: the
        caller then hands it to a thread. Saves the end of every call a thread hop."""
        if not self.db.quick:
            return False
        ended: CallView | None = None
        try:
            with without_waiting():
                ended = self._write(call, outcome)
        except WouldWait:
            return False  # nothing was written
        except Exception:
            log.exception("the outcome of call %s could not be recorded", call.id)
        self._announce(call, outcome, ended)
        return True

    def _write(self, call: InFlight, outcome: CallOutcome) -> CallView | None:
        """The one transaction; the ended call (None: it was not Running any more)."""
        status = call_moves(call.call.status, CallStatus(outcome.status))
        end = max(outcome.end_ms or now_ms(), call.call.start_time)
        used = usage_columns(call, outcome)
        if not self.direct.record_end(
            call.id,
            call.call.function_id,
            status=status,
            end_time=end,
            run_start_time=outcome.start_ms or None,
            error=outcome.error,
            response=outcome.response,
            usage=used,
            logs=outcome.logs,
            called_at=call.call.start_time,
        ):
            return None
        return call.call.ended(status, end, outcome.error, run_start_time=outcome.start_ms or None, **used)

    def _announce(self, call: InFlight, outcome: CallOutcome, ended: CallView | None) -> None:
        self.live.end(call.id, outcome.status)  # after the outcome is recorded
        self.waiters.ended(call.id, ended)
        for hook in self.on_recorded:
            hook(call)
        if self.metrics is not None:
            self._count(call, outcome)

    def _count(self, call: InFlight, outcome: CallOutcome) -> None:
        assert self.metrics is not None
        ran = outcome.start_ms and outcome.end_ms  # a call failed before it ran has no duration
        self.metrics.call_finished(
            call.call.project,
            call.call.function_id,
            outcome.status,
            (outcome.end_ms - outcome.start_ms) / 1000 if ran else None,
            call.submitted - call.accepted if call.submitted is not None else None,
        )
        if outcome.usage is not None and ran:
            self.metrics.call_used(
                call.call.project,
                call.call.function_id,
                cpu_seconds=outcome.usage.cpu_user_s + outcome.usage.cpu_system_s,
                peak_memory_bytes=outcome.usage.peak_memory_bytes,
                starting_seconds=max(0, outcome.start_ms - (call.submitted_ms or outcome.start_ms)) / 1000,
            )
        # "spawn" (a fresh interpreter for code that cannot be forked) uses no zygote
        if outcome.mode in ("fork", "fork-spare", "fork-cold"):
            self.metrics.zygote(hit=outcome.mode != "fork-cold")
