"""The built-in demo application that `callbridge serve` hosts when no application is given.

A greeting (two rising beeps), then it echoes the caller. Keys: 1-9 play a confirmation beep
whose pitch rises with the digit, 0 interrupts whatever is playing (barge-in), * mutes or
unmutes the echo, # hangs up.
"""

from __future__ import annotations

from callbridge.media.tones import ToneGenerator
from callbridge.rtvbp.application import Application, Call


def tone(frequency_hz: float, duration_ms: int, sample_rate: int) -> bytes:
    """`duration_ms` of a sine at `frequency_hz`, as L16 little-endian PCM."""
    generator = ToneGenerator("sine", frequency_hz, duration_ms, sample_rate)
    return b"".join(iter(generator.next_frame, None))


def greeting(sample_rate: int) -> bytes:
    gap = bytes(sample_rate // 10 * 2)
    return tone(440, 300, sample_rate) + gap + tone(660, 300, sample_rate)


async def demo(call: Call) -> None:
    state = {"echo": True}

    async def keys() -> None:
        async for key in call.dtmf():
            if key.digit == "#":
                await call.hangup("caller pressed #")
                return
            if key.digit == "*":
                state["echo"] = not state["echo"]
            elif key.digit == "0":
                await call.clear_audio()
            elif key.digit.isdigit():
                await call.send_audio(tone(400 + 100 * int(key.digit), 200, call.sample_rate))

    call.spawn(keys())
    await call.send_audio(greeting(call.sample_rate))
    async for frame in call.audio():
        if state["echo"]:
            await call.send_audio(frame)


app = Application(demo)
