"""A plain echo application: the caller hears themself. Useful for latency checks and load tests.

Each frame goes back from the callback that receives it: no task wakes up per frame.
"""

from __future__ import annotations

from callbridge.rtvbp.application import Application, Call


async def echo(call: Call) -> None:
    call.on_audio(call.send_audio_nowait)
    await call.wait_ended()


app = Application(echo)
