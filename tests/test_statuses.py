"""The state machines (``fnhost/statuses.py``): each allowed move, and that every other is refused."""

from __future__ import annotations

import itertools

import pytest

from fnhost.statuses import (
    CallStatus,
    FunctionStatus,
    InvalidTransition,
    SessionStatus,
    call_moves,
    function_moves,
    session_moves,
)

CALL = {(CallStatus.RUNNING, s) for s in (CallStatus.COMPLETED, CallStatus.FAILED, CallStatus.TIMEOUT)}
FUNCTION = {
    (FunctionStatus.QUEUED, FunctionStatus.DEPLOYING),
    (FunctionStatus.DEPLOYING, FunctionStatus.READY),
    (FunctionStatus.DEPLOYING, FunctionStatus.FAILED),
    (FunctionStatus.DEPLOYING, FunctionStatus.QUEUED),
}


@pytest.mark.parametrize("frm, to", list(itertools.product(CallStatus, CallStatus)))
def test_only_a_running_call_ends_and_an_end_is_final(frm: CallStatus, to: CallStatus) -> None:
    if (frm, to) in CALL:
        assert call_moves(frm, to) is to
    else:
        with pytest.raises(InvalidTransition):
            call_moves(frm, to)


@pytest.mark.parametrize("frm, to", list(itertools.product(FunctionStatus, FunctionStatus)))
def test_function_moves(frm: FunctionStatus, to: FunctionStatus) -> None:
    if (frm, to) in FUNCTION:
        assert function_moves(frm, to) is to
    else:
        with pytest.raises(InvalidTransition):
            function_moves(frm, to)


def test_sessions_and_the_wire_strings() -> None:
    assert session_moves("READY", SessionStatus.ACTIVE) is SessionStatus.ACTIVE
    with pytest.raises(InvalidTransition):
        session_moves("REVOKED", SessionStatus.ACTIVE)
    # the members are what the wire and the database carry
    assert CallStatus.RUNNING == "Running" and FunctionStatus("Ready") is FunctionStatus.READY
    assert [s.ended for s in CallStatus] == [False, True, True, True]
