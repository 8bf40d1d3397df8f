"""The media ingress path serves rtvbp.demo.v1 without placing a call."""

from __future__ import annotations

import pytest

from callbridge.rtvbp.demo_profile import demo_echo
from tests.server.conftest import ControlClient, ServerHandle

# Voice peers dial the shared aiohttp listener and the picows listener (rtvbp.fast_listen).
pytestmark = pytest.mark.parametrize("media_listener", ["aiohttp", "picows"], indirect=True)


async def test_demo_profile_on_the_media_path(server: ServerHandle, bound: ControlClient) -> None:
    assert await demo_echo(server.media_url, "parked?") == ("parked?", "parked?")
    session_id = (await bound.result("session.info"))["session_id"]
    assert [session.id for session in server.manager.sessions()] == [session_id]
    joined = f"{server.media_url}/{session_id}"
    assert await demo_echo(joined, "joined?") == ("joined?", "joined?")
    assert (await bound.result("session.info"))["endpoints"] == []
