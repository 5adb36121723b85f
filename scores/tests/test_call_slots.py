"""CallSlots (scores/call_slots.py): at most ``size`` callers at once across processes, one probe
while the dependency fails, and the health marks the processes share."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from scores.call_slots import CallSlots


@pytest.fixture(params=["one process", "shared directory"])
def slots(request: pytest.FixtureRequest, tmp_path: Path) -> CallSlots:
    directory = str(tmp_path) if request.param == "shared directory" else None
    return CallSlots("dependency", 2, directory)


def test_no_more_than_size_callers_hold_a_slot(slots: CallSlots) -> None:
    with slots.hold(0) as first, slots.hold(0) as second, slots.hold(0.05) as third:
        assert (first, second, third) == (True, True, False)
    with slots.hold(0) as again:
        assert again  # released on leaving the block


def test_a_probe_takes_the_first_slot_only_and_never_waits(slots: CallSlots) -> None:
    with slots.hold(0, probe=True) as probe, slots.hold(0, probe=True) as second_probe:
        assert (probe, second_probe) == (True, False)
        with slots.hold(0) as ordinary:
            assert ordinary  # the other slot is still there for a caller that may wait


def test_a_caller_waits_for_a_slot_that_is_released_in_time(slots: CallSlots) -> None:
    holding, release = threading.Event(), threading.Event()

    def hold_both() -> None:
        with slots.hold(0), slots.hold(0):
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold_both)
    holder.start()
    try:
        assert holding.wait(5)
        with slots.hold(0) as none_free:
            assert not none_free
        threading.Timer(0.05, release.set).start()
        with slots.hold(2) as freed:
            assert freed
    finally:
        release.set()
        holder.join()


def test_the_marks_say_failing_and_open_until_they_expire_or_are_cleared(
    slots: CallSlots,
) -> None:
    assert (slots.failing(), slots.open_remaining()) == (False, 0)

    slots.mark_failing(30)
    slots.mark_open(30)

    assert slots.failing()
    assert 29 < slots.open_remaining() <= 30
    slots.mark_answering()
    assert not slots.failing()
    slots.clear_marks()
    assert slots.open_remaining() == 0
    slots.mark_failing(-1)  # already over
    assert not slots.failing()


def _hold_for(directory: str, held: multiprocessing.synchronize.Event, done: float) -> None:
    other = CallSlots("dependency", 2, directory)
    with other.hold(0), other.hold(0):
        other.mark_open(30)
        held.set()  # after the mark: the parent reads both at once
        threading.Event().wait(done)


def test_slots_and_marks_are_shared_by_the_processes_of_a_server(tmp_path: Path) -> None:
    slots = CallSlots("dependency", 2, str(tmp_path))
    held = multiprocessing.get_context("fork").Event()
    process = multiprocessing.get_context("fork").Process(
        target=_hold_for, args=(str(tmp_path), held, 1.0)
    )
    process.start()
    try:
        assert held.wait(10)
        with slots.hold(0) as free:
            assert not free  # the other process holds both
        assert slots.open_remaining() > 25
    finally:
        process.join(10)
    with slots.hold(0) as free:
        assert free  # its locks went with it


def test_a_killed_process_leaks_no_slot(tmp_path: Path) -> None:
    slots = CallSlots("dependency", 2, str(tmp_path))
    held = multiprocessing.get_context("fork").Event()
    process = multiprocessing.get_context("fork").Process(
        target=_hold_for, args=(str(tmp_path), held, 60.0)
    )
    process.start()
    assert held.wait(10)
    process.kill()
    process.join(10)

    with slots.hold(0) as first, slots.hold(0) as second:
        assert (first, second) == (True, True)
