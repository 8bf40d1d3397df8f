"""A small client of callbridge's control WebSocket, shared by the examples.

One request at a time; events that arrive meanwhile are printed and kept for `event()`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import aiohttp

EVENT_WAIT_S = 15.0
"""How long an example waits for an event before it gives up."""


class Controller:
    """A control connection: one request at a time; events are printed and kept."""

    def __init__(self, websocket: aiohttp.ClientWebSocketResponse) -> None:
        self.websocket = websocket
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def request(self, method: str, **params: Any) -> Any:
        message = {"id": str(next(self.ids)), "method": method, "params": params}
        print(f"  -> {json.dumps(message)[:120]}")
        await self.websocket.send_json(message)
        while True:
            reply = await self.websocket.receive_json(timeout=10)
            if "event" in reply:
                self._keep(reply)
                continue
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            print(f"  <- {json.dumps(reply)[:120]}")
            return reply["result"]

    async def event(self, name: str) -> dict[str, Any]:
        """The data of the next event `name` (earlier ones included)."""
        async with asyncio.timeout(EVENT_WAIT_S):
            while True:
                for event in self.events:
                    if event["event"] == name:
                        self.events.remove(event)
                        return dict(event["data"])
                self._keep(await self.websocket.receive_json())

    def _keep(self, event: dict[str, Any]) -> None:
        print(f"  <- event {json.dumps(event)[:120]}")
        self.events.append(event)
