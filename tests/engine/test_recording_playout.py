"""One leg's frames on the recordings' tick: prebuffer, jitter absorbed, silence, trim."""

from __future__ import annotations

from callbridge.engine.recording_playout import PREBUFFER_FRAMES, LegPlayout


def _frame(number: int) -> bytes:
    return number.to_bytes(2, "little") * 160


def test_a_talkspurt_starts_after_the_prebuffer() -> None:
    playout = LegPlayout()
    playout.on_frame(_frame(1), 0.0)
    assert playout.take(1) is None
    playout.on_frame(_frame(2), 0.0)
    assert PREBUFFER_FRAMES == 2
    assert playout.take(2) == _frame(1)
    assert playout.take(2) == _frame(1)  # every recording gets the same frame in a tick


def test_a_late_packet_leaves_no_hole() -> None:
    playout = LegPlayout()
    playout.on_frame(_frame(1), 0.0)
    playout.on_frame(_frame(2), 0.0)
    taken = [playout.take(1)]
    # frame 3 arrives just after tick 2, frame 4 on time before tick 3
    taken.append(playout.take(2))
    playout.on_frame(_frame(3), 0.0)
    playout.on_frame(_frame(4), 0.0)
    taken.append(playout.take(3))
    taken.append(playout.take(4))
    assert taken == [_frame(1), _frame(2), _frame(3), _frame(4)]


def test_silence_then_a_new_talkspurt() -> None:
    playout = LegPlayout()
    playout.on_frame(_frame(1), 0.0)
    playout.on_frame(_frame(2), 0.0)
    assert [playout.take(tick) for tick in (1, 2, 3)] == [_frame(1), _frame(2), None]
    playout.on_frame(_frame(3), 0.0)
    assert playout.take(4) is None
    playout.on_frame(_frame(4), 0.0)
    assert playout.take(5) == _frame(3)


def test_a_fast_sender_is_trimmed() -> None:
    playout = LegPlayout()
    for number in range(4):
        playout.on_frame(_frame(number), 0.0)
    taken = []
    for tick in range(1, 101):
        playout.on_frame(_frame(100 + tick), 0.0)
        taken.append(playout.take(tick))
    assert None not in taken
    assert len(playout._frames) <= 2
