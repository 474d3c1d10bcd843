"""Admission: which accepted calls may start now. Pure: no database, no threads, no clock.

A call waits until its function is Ready and there is a free slot both for its function
(``per_function``) and for its project (``per_project``). Calls of one function start in
the order they were accepted; a function at its limit does not hold back the calls of
another (only of its own), so one busy function cannot starve the rest of its project
beyond the project's own limit.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar


@dataclass(frozen=True)
class Slot:
    """What admission needs to know of a call."""

    call_id: int
    function_id: int
    project: str


T = TypeVar("T")


class Admission(Generic[T]):
    """The waiting line and the running counts; ``T`` is the caller's record of a call."""

    def __init__(self, per_function: int, per_project: int) -> None:
        self.per_function = per_function
        self.per_project = per_project
        self._waiting: deque[tuple[Slot, T]] = deque()
        self.running_by_function: Counter[int] = Counter()
        self.running_by_project: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._waiting)

    def offer(self, slot: Slot, item: T) -> None:
        """A call is accepted: it waits its turn."""
        self._waiting.append((slot, item))

    def admit(self, is_ready: Callable[[int], bool]) -> list[tuple[Slot, T]]:
        """The waiting calls that may start now, in order; each is counted as running."""
        started: list[tuple[Slot, T]] = []
        keep: deque[tuple[Slot, T]] = deque()
        for slot, item in self._waiting:
            if (
                is_ready(slot.function_id)
                and self.running_by_function[slot.function_id] < self.per_function
                and self.running_by_project[slot.project] < self.per_project
            ):
                self.running_by_function[slot.function_id] += 1
                self.running_by_project[slot.project] += 1
                started.append((slot, item))
            else:
                keep.append((slot, item))
        self._waiting = keep
        return started

    def started_outside(self, slot: Slot) -> None:
        """Count a call as running that never waited (it ends without starting, say)."""
        self.running_by_function[slot.function_id] += 1
        self.running_by_project[slot.project] += 1

    def release(self, slot: Slot) -> None:
        """A running call ended: its slots are free."""
        self.running_by_function[slot.function_id] -= 1
        self.running_by_project[slot.project] -= 1
        if self.running_by_function[slot.function_id] <= 0:
            del self.running_by_function[slot.function_id]
        if self.running_by_project[slot.project] <= 0:
            del self.running_by_project[slot.project]

    def waiting_functions(self) -> set[int]:
        return {slot.function_id for slot, _ in self._waiting}

    def withdraw(self, function_ids: Iterable[int]) -> list[tuple[Slot, T]]:
        """Take out every waiting call of these functions (deleted, failed to deploy)."""
        gone = set(function_ids)
        out = [(s, i) for s, i in self._waiting if s.function_id in gone]
        self._waiting = deque((s, i) for s, i in self._waiting if s.function_id not in gone)
        return out
