"""The state machines, one enum and one transition function each.

The members are ``str``: they are what the wire carries and the database stores, so a
``CallStatus.RUNNING`` compares equal to ``"Running"`` wherever the string arrives from.

    function   Queued ──▶ Deploying ──▶ Ready
                  ▲          │   └────▶ Failed
                  └──────────┘ (its builder stopped: built again)
    call       Running ──▶ Completed | Failed | Timeout      (each ending is final)
    session    READY ──▶ ACTIVE ──▶ REVOKED | EXPIRED | ACCESS_LOST
                 └─────▶ CANCELLED | EXPIRED
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar


class InvalidTransition(Exception):
    """A state machine was asked for a move it does not have (a bug, not a user error)."""


class FunctionStatus(StrEnum):
    QUEUED = "Queued"
    DEPLOYING = "Deploying"
    READY = "Ready"
    FAILED = "Failed"


class CallStatus(StrEnum):
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    TIMEOUT = "Timeout"

    @property
    def ended(self) -> bool:
        return self is not CallStatus.RUNNING


class SessionStatus(StrEnum):
    READY = "READY"
    ACTIVE = "ACTIVE"
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"
    ACCESS_LOST = "ACCESS_LOST"


_S = TypeVar("_S", "FunctionStatus", "CallStatus", "SessionStatus")

_FUNCTION_MOVES: dict[FunctionStatus, frozenset[FunctionStatus]] = {
    FunctionStatus.QUEUED: frozenset({FunctionStatus.DEPLOYING}),
    FunctionStatus.DEPLOYING: frozenset({FunctionStatus.READY, FunctionStatus.FAILED, FunctionStatus.QUEUED}),
    FunctionStatus.READY: frozenset(),
    FunctionStatus.FAILED: frozenset(),
}
_CALL_MOVES: dict[CallStatus, frozenset[CallStatus]] = {
    CallStatus.RUNNING: frozenset({CallStatus.COMPLETED, CallStatus.FAILED, CallStatus.TIMEOUT}),
    CallStatus.COMPLETED: frozenset(),
    CallStatus.FAILED: frozenset(),
    CallStatus.TIMEOUT: frozenset(),
}
_SESSION_MOVES: dict[SessionStatus, frozenset[SessionStatus]] = {
    SessionStatus.READY: frozenset({SessionStatus.ACTIVE, SessionStatus.CANCELLED, SessionStatus.EXPIRED,
                                    SessionStatus.REVOKED}),
    SessionStatus.ACTIVE: frozenset({SessionStatus.REVOKED, SessionStatus.EXPIRED, SessionStatus.ACCESS_LOST}),
    SessionStatus.CANCELLED: frozenset(),
    SessionStatus.EXPIRED: frozenset(),
    SessionStatus.REVOKED: frozenset(),
    SessionStatus.ACCESS_LOST: frozenset(),
}


def function_moves(current: str, to: FunctionStatus) -> FunctionStatus:
    """``to`` if a function in ``current`` may move there; raises otherwise."""
    return _move(_FUNCTION_MOVES, FunctionStatus(current), to, "function")


def call_moves(current: str, to: CallStatus) -> CallStatus:
    """``to`` if a call in ``current`` may move there (only a running call ends); raises otherwise."""
    return _move(_CALL_MOVES, CallStatus(current), to, "call")


def session_moves(current: str, to: SessionStatus) -> SessionStatus:
    return _move(_SESSION_MOVES, SessionStatus(current), to, "session")


def _move(moves: dict[_S, frozenset[_S]], current: _S, to: _S, what: str) -> _S:
    if to not in moves[current]:
        raise InvalidTransition(f"a {what} cannot go from {current} to {to}")
    return to

