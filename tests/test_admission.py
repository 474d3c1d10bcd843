"""Admission of accepted calls, in-process (``services/calls/admission.py``): which may start
now, in what order, within the per-function and per-project limits."""

from __future__ import annotations

from fnhost.services.calls.admission import Admission, Slot


def slot(call_id: int, function_id: int, project: str = "p") -> Slot:
    return Slot(call_id, function_id, project)


def offer(adm: Admission[int], *slots: Slot) -> None:
    for s in slots:
        adm.offer(s, s.call_id)


def started(adm: Admission[int], ready: set[int] | None = None) -> list[int]:
    return [item for _, item in adm.admit(lambda fid: ready is None or fid in ready)]


def test_calls_of_a_function_start_in_order_up_to_its_limit() -> None:
    adm: Admission[int] = Admission(per_function=2, per_project=10)
    offer(adm, slot(1, 7), slot(2, 7), slot(3, 7))
    assert started(adm) == [1, 2]
    assert started(adm) == []  # 3 waits: both of function 7's slots are taken
    adm.release(slot(1, 7))
    assert started(adm) == [3]
    assert len(adm) == 0


def test_a_function_at_its_limit_does_not_hold_back_another() -> None:
    adm: Admission[int] = Admission(per_function=1, per_project=10)
    offer(adm, slot(1, 7), slot(2, 7), slot(3, 8))
    assert started(adm) == [1, 3]  # 2 waits behind 1; function 8's call goes past it


def test_the_project_limit_counts_every_function_of_the_project() -> None:
    adm: Admission[int] = Admission(per_function=5, per_project=2)
    offer(adm, slot(1, 7), slot(2, 8), slot(3, 9), slot(4, 9, project="other"))
    assert started(adm) == [1, 2, 4]  # the other project has its own two
    adm.release(slot(2, 8))
    assert started(adm) == [3]


def test_calls_wait_until_their_function_is_ready() -> None:
    adm: Admission[int] = Admission(per_function=5, per_project=5)
    offer(adm, slot(1, 7), slot(2, 8))
    assert started(adm, ready={8}) == [2]
    assert adm.waiting_functions() == {7}
    assert started(adm, ready={7, 8}) == [1]


def test_withdrawn_calls_leave_the_line_and_counts_never_go_negative() -> None:
    adm: Admission[int] = Admission(per_function=1, per_project=5)
    offer(adm, slot(1, 7), slot(2, 7), slot(3, 8))
    assert [s.call_id for s, _ in adm.withdraw([7])] == [1, 2]
    assert started(adm) == [3]
    adm.started_outside(slot(4, 7))  # a call that ends without ever starting still holds a slot
    assert adm.running_by_function[7] == 1
    adm.release(slot(4, 7))
    adm.release(slot(3, 8))
    assert not adm.running_by_function and not adm.running_by_project
