"""rtvbp.demo.v1 served by the SDK's ingress: the echo-observed conformance scenario over a real
WebSocket, and rtvbp.v1 calls on the same path unaffected."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from callbridge.rtvbp import demo_v1
from callbridge.rtvbp.application import Application, Call
from callbridge.rtvbp.catalog import Role, encode_payload
from callbridge.rtvbp.demo_profile import DEMO_PROFILE, demo_echo
from callbridge.rtvbp.session import RtvbpSession
from callbridge.rtvbp.voice import VoiceCall
from callbridge.rtvbp.websocket import connect
from tests.conftest import serve_application
from tests.rtvbp.vectors import load_json

SCENARIO = load_json("demo.v1/scenarios/echo-observed.json")


async def hang_up(call: Call) -> None:
    await call.hangup("done")


def as_json(value: Any) -> Any:
    return json.loads(encode_payload(value))


async def test_the_echo_observed_scenario_is_served() -> None:
    [case] = SCENARIO["cases"]
    request, response, event = case["steps"]
    async with serve_application(Application(hang_up)) as url:
        connected = await connect(url, profiles=(DEMO_PROFILE,))
        assert connected.profile.token == DEMO_PROFILE
        observed: asyncio.Queue[Any] = asyncio.Queue()

        async def on_observed(data: Any) -> None:
            observed.put_nowait(data)

        session = RtvbpSession(Role.VOICE, demo_v1.CATALOG, connected.transport)
        session.on_event(event["event"], on_observed)
        async with session:
            result = await session.request(
                request["method"], demo_v1.DemoEchoRequest(**request["params"])
            )
            assert as_json(result) == response["result"]
            data = await asyncio.wait_for(observed.get(), 5)
            assert as_json(data) == event["data"]


async def test_demo_echo_and_a_call_on_the_same_path() -> None:
    async with serve_application(Application(hang_up)) as url:
        assert await demo_echo(url, "hello") == ("hello", "hello")
        call = await VoiceCall.dial(url)
        outcome = await asyncio.wait_for(call.wait_ended(), 5)
        assert outcome.detail == "done"
        await call.close()
