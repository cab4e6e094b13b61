"""How a big decode leaves Python's garbage collector: enabled as before, the
result still tracked (cycles through it stay collectable), a program's own
frozen objects left frozen."""

from __future__ import annotations

import gc

from conftest import recording_files

from smlogger import sml


def big_stream() -> bytes:
    data = b"".join(p.read_bytes() for p in recording_files())
    return data * 6  # > 1,000 frames: the size at which the batch is promoted


def test_gc_state_restored_and_result_tracked() -> None:
    assert gc.isenabled()
    frames = sml.decode(big_stream())
    assert len(frames) > 1000
    assert gc.isenabled()
    assert gc.is_tracked(frames[0]) and gc.is_tracked(frames[0]["messages"])
    gc.disable()
    try:
        sml.decode(big_stream())
        assert not gc.isenabled(), "a disabled collector stays disabled"
    finally:
        gc.enable()


def test_cycle_through_result_is_collected() -> None:
    frames = sml.decode(big_stream())
    frame = frames[0]
    del frames
    frame["messages"].append(frame)  # type: ignore[arg-type]  # a cycle through the result
    frame["messages"][0]["body"]["marker"] = _Marker()
    del frame
    gc.collect()
    assert _Marker.alive == 0


def test_programs_frozen_objects_stay_frozen() -> None:
    # Checked on objects, not on gc.get_freeze_count(): another thread freeing
    # one of the frozen objects lowers that count while the decode runs.
    # get_objects() lists every generation but the permanent (frozen) one.
    mine = [object()]
    gc.freeze()
    try:
        assert gc.get_freeze_count() > 0
        frames = sml.decode(big_stream())
        assert len(frames) > 1000
        listed = {id(o) for o in gc.get_objects()}
        assert id(mine) not in listed, "decode unfroze the program's objects"
        assert id(frames) in listed, "decode froze its own result"
    finally:
        gc.unfreeze()
    assert id(mine) in {id(o) for o in gc.get_objects()}


class _Marker:
    alive = 0

    def __init__(self) -> None:
        _Marker.alive += 1

    def __del__(self) -> None:
        _Marker.alive -= 1
