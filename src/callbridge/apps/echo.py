"""A plain echo application: the caller hears themself. Useful for latency checks and load tests."""

from __future__ import annotations

from callbridge.rtvbp.application import Application, Call


async def echo(call: Call) -> None:
    async for frame in call.audio():
        await call.send_audio(frame)


app = Application(echo)
