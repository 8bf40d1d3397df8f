"""RTVBP legs through the control protocol: a real server (control WebSocket, media ingress,
HTTP API, engine), real voice peers and agents over WebSockets, real UDP phones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import pytest

from callbridge.engine.rtvbp_endpoint import RtvbpEndpoint
from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.application import Application, Call
from callbridge.rtvbp.errors import RemoteError
from callbridge.rtvbp.voice import VoiceCall
from callbridge.rtvbp.websocket import ConnectError
from tests.conftest import serve_application, wait_until
from tests.engine.rtvbp_support import Caller, Phone, echo, rms, strongest

if TYPE_CHECKING:
    from tests.server.conftest import ControlClient, ServerHandle, StartServer

L16_8K = bf.AudioCodec.l16(8000)
L16_16K = bf.AudioCodec.l16(16000)

# Voice peers dial the shared aiohttp listener and the picows listener (rtvbp.fast_listen).
pytestmark = pytest.mark.parametrize("media_listener", ["aiohttp", "picows"], indirect=True)


async def phone_in(client: ControlClient) -> tuple[str, Phone]:
    phone = await Phone.open()
    created = await client.result(
        "endpoint.create_from_offer", {"sdp": phone.peer.offer("pcmu", 101)}
    )
    phone.peer.use(created["sdp_answer"])
    phone.start()
    return created["endpoint_id"], phone


async def settled(server: ServerHandle) -> None:
    """The engine's background work (dials, hang-ups) is over."""
    await wait_until(lambda: not server.manager.context.tasks, 5.0)


def leg(server: ServerHandle, session_id: str, endpoint_id: str) -> RtvbpEndpoint:
    session = server.manager.get(session_id)
    assert session is not None
    endpoint = session.endpoints[endpoint_id]
    assert isinstance(endpoint, RtvbpEndpoint)
    return endpoint


@asynccontextmanager
async def echo_agent(**options: Any) -> AsyncIterator[str]:
    async with serve_application(Application(echo, **options)) as url:
        yield url


# --- outbound legs over the control protocol --------------------------------------------------


async def test_outbound_leg_through_the_control_protocol(
    server: ServerHandle, bound: ControlClient
) -> None:
    digits: list[bf.DtmfEvent] = []

    async def agent(call: Call) -> None:
        async for event in call.dtmf():
            digits.append(event)

    async with serve_application(Application(agent)) as url:
        secret_url = url.replace("ws://", "ws://user:pw@") + "?token=s3cret"
        created = await bound.result(
            "endpoint.create_rtvbp",
            {
                "url": secret_url,
                "call": {"from": "+4930123", "to": "+4930456"},
                "application_id": "agent-7",
                "metadata": {"lang": "de"},
                "codecs": ["L16/16000/1", 8000],
            },
        )
        endpoint_id = created["endpoint_id"]
        changed = await bound.next_event("endpoint.state_changed")
        assert changed == {
            "endpoint_id": endpoint_id,
            "old_state": "connecting",
            "new_state": "connected",
        }
        info = await bound.result("session.info")
        [entry] = info["endpoints"]
        assert entry["endpoint_type"] == "rtvbp" and entry["codec"] == "L16/16000"
        rtvbp = entry["rtvbp"]
        assert rtvbp["url"] == url and "s3cret" not in str(info)
        assert rtvbp["role"] == "voice" and rtvbp["application_id"] == "agent-7"
        assert rtvbp["call"]["from"] == "+4930123" and rtvbp["call"]["to"] == "+4930456"
        assert rtvbp["call"]["session_id"] == info["session_id"]
        assert rtvbp["metadata"] == {"lang": "de"} and rtvbp["codec"] == "L16/16000/1"

        ping = await bound.result(
            "endpoint.rtvbp.request",
            {"endpoint_id": endpoint_id, "method": "ping", "params": {"t0": 1700000000000}},
        )
        assert ping["result"]["t0"] == 1700000000000 and ping["result"]["t2"] > 0
        assert (
            await bound.result(
                "endpoint.rtvbp.notify",
                {
                    "endpoint_id": endpoint_id,
                    "event": "dtmf",
                    "data": {"seq": 99, "pressed_at": 1, "released_at": 2, "digit": "4"},
                },
            )
            == {}
        )
        await wait_until(lambda: len(digits) == 1)
        assert (digits[0].seq, digits[0].digit) == (0, "4")  # the leg numbers its digits

        assert await bound.result(
            "endpoint.rtvbp.request",
            {
                "endpoint_id": endpoint_id,
                "method": "session.terminate",
                "params": {"reason": "done"},
            },
        ) == {"result": {}}
        assert await bound.next_event("endpoint.rtvbp.ended") == {
            "endpoint_id": endpoint_id,
            "reason": "hangup",
            "detail": "done",
        }
        assert (await bound.result("session.info"))["endpoints"] == []
        await settled(server)


async def test_rtvbp_method_errors(server: ServerHandle, bound: ControlClient) -> None:
    unbound = await server.connect()
    assert (await unbound.error("endpoint.create_rtvbp", {"url": "ws://x/"}))[
        "code"
    ] == "NO_SESSION"
    for params, fragment in (
        ({}, "url"),
        ({"url": "http://127.0.0.1/agent"}, "ws://"),
        ({"url": "ws://127.0.0.1/", "codecs": [True]}, "codecs"),
        ({"url": "ws://127.0.0.1/", "codecs": ["opus/48000"]}, "L16"),
        ({"url": "ws://127.0.0.1/", "direction": "sideways"}, "direction"),
    ):
        error = await bound.error("endpoint.create_rtvbp", params)
        assert error["code"] == "INVALID_PARAMS" and fragment in error["message"], error
    async with echo_agent() as url:
        endpoint_id = (await bound.result("endpoint.create_rtvbp", {"url": url}))["endpoint_id"]
        await bound.next_event("endpoint.state_changed")
        tone_id = (await bound.result("endpoint.create_tone", {"tone": "beep"}))["endpoint_id"]
        for params, code, fragment in (
            ({"endpoint_id": endpoint_id, "method": "nope"}, "INVALID_PARAMS", "unknown"),
            ({"endpoint_id": endpoint_id, "method": "call.hangup"}, "INVALID_PARAMS", "role"),
            (
                {"endpoint_id": endpoint_id, "method": "session.initialize"},
                "INVALID_PARAMS",
                "callbridge",
            ),
            ({"endpoint_id": endpoint_id, "method": "ping"}, "INVALID_PARAMS", "t0"),
            (
                {"endpoint_id": endpoint_id, "method": "ping", "params": {"t0": 0}},
                "INVALID_PARAMS",
                "t0",
            ),
            ({"endpoint_id": tone_id, "method": "ping"}, "ENDPOINT_ERROR", "Not an RTVBP"),
            (
                {"endpoint_id": "6f1c3e0a-1b2c-4d5e-8f90-0123456789ab", "method": "ping"},
                "ENDPOINT_ERROR",
                "not found",
            ),
            ({"endpoint_id": "nope", "method": "ping"}, "INVALID_PARAMS", "endpoint_id"),
            ({"endpoint_id": endpoint_id}, "INVALID_PARAMS", "method"),
        ):
            error = await bound.error("endpoint.rtvbp.request", params)
            assert error["code"] == code and fragment in error["message"], (params, error)
        for params, fragment in (
            ({"endpoint_id": endpoint_id, "event": "audio.speech.started"}, "role"),
            ({"endpoint_id": endpoint_id, "event": "session.updated"}, "callbridge"),
            ({"endpoint_id": endpoint_id, "event": "nope"}, "unknown"),
            (
                {"endpoint_id": endpoint_id, "event": "dtmf", "data": {"digit": "1"}},
                "invalid dtmf data",
            ),
        ):
            error = await bound.error("endpoint.rtvbp.notify", params)
            assert error["code"] == "INVALID_PARAMS" and fragment in error["message"], error
        await bound.result("endpoint.remove", {"endpoint_id": endpoint_id})
        await settled(server)


async def test_session_variables_are_shared_with_the_agent(
    server: ServerHandle, bound: ControlClient
) -> None:
    seen: list[dict[str, Any]] = []

    async def agent(call: Call) -> None:
        seen.append(await call.get_variables("queue"))
        await call.set_variables({"intent": "billing", "score": 0.5})
        seen.append({})
        await call.wait_ended()

    assert await bound.result("session.variables.set", {"data": {"queue": "gold", "n": 1}}) == {}
    assert (await bound.error("session.variables.set", {}))["code"] == "INVALID_PARAMS"
    async with serve_application(Application(agent)) as url:
        endpoint_id = (await bound.result("endpoint.create_rtvbp", {"url": url}))["endpoint_id"]
        await wait_until(lambda: len(seen) == 2)
        assert seen[0] == {"queue": "gold"}
        assert await bound.result("session.variables.get", {}) == {
            "variables": {"queue": "gold", "n": 1, "intent": "billing", "score": 0.5}
        }
        assert await bound.result("session.variables.get", {"keys": ["intent", "zzz"]}) == {
            "variables": {"intent": "billing"}
        }
        await bound.result("endpoint.remove", {"endpoint_id": endpoint_id})
        await settled(server)


async def test_unreachable_agent_ends_in_an_event(
    server: ServerHandle, bound: ControlClient
) -> None:
    endpoint_id = (await bound.result("endpoint.create_rtvbp", {"url": "ws://127.0.0.1:9/x"}))[
        "endpoint_id"
    ]
    ended = await bound.next_event("endpoint.rtvbp.ended")
    assert ended["endpoint_id"] == endpoint_id and ended["reason"] == "failed"
    assert "cannot connect to 127.0.0.1:9" in ended["detail"]
    assert (await bound.result("session.info"))["endpoints"] == []


# --- inbound legs: parked, claimed, bridged ---------------------------------------------------


async def test_parked_call_is_claimed_and_bridged_to_a_phone(
    server: ServerHandle, client: ControlClient
) -> None:
    """A voice peer calls the media path, is parked, claimed with session.attach and bridged
    to an RTP phone: audio both ways, DTMF both ways, then each side hangs up."""
    assert await client.result("calls.subscribe") == {}
    caller = await Caller.dial(
        server.media_url,
        codecs=[L16_16K, L16_8K],
        application_id="ivr-node-3",
        metadata={"recording_consent": True},
    )
    incoming = await client.next_event("call.incoming")
    session_id, leg_id = incoming["session_id"], incoming["endpoint_id"]
    assert incoming["call"] == {
        "id": caller.voice.call.id,
        "session_id": caller.voice.call.session_id,
        "from": caller.voice.call.from_,
        "to": caller.voice.call.to,
    }
    assert incoming["application_id"] == "ivr-node-3" and incoming["codec"] == "L16/16000"
    assert incoming["metadata"] == {"recording_consent": True}
    assert incoming["remote"] == "127.0.0.1"
    listed = (await client.result("session.list"))["sessions"]
    [parked] = [entry for entry in listed if entry["session_id"] == session_id]
    assert parked["state"] == "orphaned" and parked["calls"][0]["endpoint_id"] == leg_id
    async with server.http.get(f"{server.base_url}/sessions/{session_id}") as response:
        assert (await response.json())["endpoints"][0]["rtvbp"]["role"] == "application"

    controller = await server.connect()
    assert await controller.result("session.attach", {"session_id": session_id}) == {}
    phone_id, phone = await phone_in(controller)
    caller.say(440)
    phone.say(880)
    await asyncio.sleep(1.2)
    now = time.monotonic()
    assert abs(strongest(phone.heard_pcm(since=now - 0.6), 8000)[0] - 440) < 15
    assert abs(strongest(caller.heard_pcm(since=now - 0.6), 16000)[0] - 880) < 15

    await caller.voice.send_dtmf("5", hold_ms=120)  # voice peer -> RFC 4733 to the phone
    pressed = await controller.next_event("dtmf")
    assert (pressed["endpoint_id"], pressed["digit"]) == (leg_id, "5")
    assert 120 <= pressed["duration_ms"] < 200  # pressed_at to released_at, as the peer held it
    event = await controller.next_event("rtvbp.event")
    assert event["endpoint_id"] == leg_id and event["event"] == "dtmf"
    await wait_until(lambda: 5 in phone.digits_heard())
    assert set(phone.digits_heard()) == {5}

    phone.say(None)
    caller.say(None)
    await asyncio.sleep(0.3)
    pressed_at = time.monotonic()
    phone.press("9", 200)  # RFC 4733 from the phone -> in-band tones to the voice peer
    assert (await controller.next_event("dtmf"))["endpoint_id"] == phone_id
    await asyncio.sleep(0.5)
    tones = [frame for arrival, frame in caller.heard if arrival >= pressed_at and rms(frame) > 500]
    assert len(tones) >= 8
    low, high = sorted(strongest(b"".join(tones), 16000, 2))
    assert abs(low - 852) < 20 and abs(high - 1477) < 20

    await caller.voice.hangup("caller left")
    assert await controller.next_event("endpoint.rtvbp.ended") == {
        "endpoint_id": leg_id,
        "reason": "voice-hangup",
        "detail": "caller left",
    }
    info = await controller.result("session.info")
    assert [entry["endpoint_id"] for entry in info["endpoints"]] == [phone_id]
    await caller.stop()
    await phone.close()
    await controller.result("session.destroy")
    await settled(server)


async def test_controller_hangs_up_the_voice_peer(
    server: ServerHandle, bound: ControlClient
) -> None:
    """A voice peer joins the session named in the path; the controller ends its call."""
    session_id = (await bound.result("session.info"))["session_id"]
    caller = await Caller.dial(f"{server.media_url}/{session_id}")
    incoming = await bound.next_event("call.incoming")  # to the session's own controller
    leg_id = incoming["endpoint_id"]
    assert incoming["session_id"] == session_id and incoming["codec"] == "L16/8000"
    injected_at = time.monotonic()
    assert (
        await bound.result(
            "endpoint.dtmf.inject", {"endpoint_id": leg_id, "digit": "1", "duration_ms": 200}
        )
        == {}
    )
    await asyncio.sleep(0.4)
    tones = [
        frame for arrival, frame in caller.heard if arrival >= injected_at and rms(frame) > 500
    ]
    assert len(tones) >= 8  # in-band toward a voice peer: 697 + 1209 Hz
    low, high = sorted(strongest(b"".join(tones), 8000, 2))
    assert abs(low - 697) < 20 and abs(high - 1209) < 20
    assert await bound.result(
        "endpoint.rtvbp.request",
        {"endpoint_id": leg_id, "method": "call.hangup", "params": {"reason": "bye"}},
    ) == {"result": {}}
    assert await bound.next_event("endpoint.rtvbp.ended") == {
        "endpoint_id": leg_id,
        "reason": "hangup",
        "detail": "bye",
    }
    assert await caller.voice.wait_ended() == caller.voice.end_reason
    assert caller.voice.end_reason is not None
    assert (caller.voice.end_reason.kind, caller.voice.end_reason.detail) == (
        "application-hangup",
        "bye",
    )
    await caller.stop()
    await settled(server)


async def test_joining_picks_the_rate_of_the_session(
    server: ServerHandle, bound: ControlClient
) -> None:
    other = await Phone.open()
    await bound.result("endpoint.create_from_offer", {"sdp": other.peer.offer("g722", 101)})
    session_id = (await bound.result("session.info"))["session_id"]
    voice = await VoiceCall.dial(
        f"{server.media_url}/{session_id}", codecs=[L16_8K, L16_16K, bf.AudioCodec.l16(24000)]
    )
    assert voice.codec == L16_16K  # G.722 is 16 kHz: no resampling
    await bound.next_event("call.incoming")
    await voice.hangup()
    await bound.next_event("endpoint.rtvbp.ended")
    other.peer.close()
    await settled(server)


async def test_controller_barge_in_clears_exactly_the_unplayed_audio(
    server: ServerHandle, bound: ControlClient
) -> None:
    """A tone plays to a voice peer whose player lags; the controller signals speech and
    clears: the voice peer discards exactly what it had not played."""
    session_id = (await bound.result("session.info"))["session_id"]
    await bound.result("endpoint.create_tone", {"tone": "sine", "frequency": 500})
    caller = await Caller.dial(f"{server.media_url}/{session_id}")
    caller.listening = False  # the player lags: audio piles up in the playout buffer
    leg_id = (await bound.next_event("call.incoming"))["endpoint_id"]
    await asyncio.sleep(0.6)
    voice = caller.voice
    assert voice.playout is not None
    played = [voice.read_frame() for _ in range(5)]
    assert all(frame is not None for frame in played)
    assert (
        await bound.result(
            "endpoint.rtvbp.notify",
            {"endpoint_id": leg_id, "event": "audio.speech.started", "data": {"origin": "sender"}},
        )
        == {}
    )
    cleared = await bound.result(
        "endpoint.rtvbp.request", {"endpoint_id": leg_id, "method": "audio.buffer.clear"}
    )
    endpoint = leg(server, session_id, leg_id)
    discarded_by_voice = voice.session.stats.audio_bytes_in - 5 * 320 - len(voice.playout)
    assert discarded_by_voice > 10 * 320
    local = endpoint.last_cleared_bytes
    assert cleared == {"result": {"len": discarded_by_voice + local}}
    events = [event async for event in _first_events(voice, 1)]
    assert events == [bf.AudioSpeechStartedEvent(origin="sender")]
    await voice.hangup()
    await bound.next_event("endpoint.rtvbp.ended")
    await caller.stop()
    await settled(server)


async def _first_events(voice: VoiceCall, count: int) -> AsyncIterator[Any]:
    iterator = voice.events()
    for _ in range(count):
        yield await asyncio.wait_for(iterator.__anext__(), 2)


async def test_call_keeps_flowing_while_the_controller_is_away(
    server: ServerHandle, client: ControlClient
) -> None:
    session_id = (await client.result("session.create"))["session_id"]
    await client.result("endpoint.create_tone", {"tone": "sine", "frequency": 600})
    caller = await Caller.dial(f"{server.media_url}/{session_id}")
    leg_id = (await client.next_event("call.incoming"))["endpoint_id"]
    session = server.manager.get(session_id)
    assert session is not None
    await client.close()
    await wait_until(lambda: session.state == "orphaned")
    away = time.monotonic()
    await asyncio.sleep(1.0)
    heard = caller.heard_pcm(since=away + 0.1)
    assert len(heard) >= 40 * 320 and abs(strongest(heard, 8000)[0] - 600) < 15
    controller = await server.connect()
    assert await controller.result("session.attach", {"session_id": session_id}) == {}
    info = await controller.result("session.info")
    entry = next(entry for entry in info["endpoints"] if entry["endpoint_id"] == leg_id)
    assert entry["state"] == "connected" and entry["rtvbp"]["role"] == "application"
    await caller.voice.hangup()
    ended = await controller.next_event("endpoint.rtvbp.ended")
    assert (ended["endpoint_id"], ended["reason"]) == (leg_id, "voice-hangup")
    await caller.stop()
    await controller.result("session.destroy")
    await settled(server)


# --- inbound bad input ------------------------------------------------------------------------


async def test_ingress_refusals_before_the_upgrade(server: ServerHandle) -> None:
    for suffix, status in (("/not-a-uuid", 400), ("/6f1c3e0a-1b2c-4d5e-8f90-0123456789ab", 404)):
        with pytest.raises(ConnectError) as error:
            await VoiceCall.dial(server.media_url + suffix)
        assert error.value.status == status
    async with server.http.get(f"{server.media_url.replace('ws:', 'http:')}/nope") as response:
        assert response.status == 400 and (await response.json()) == {"error": "invalid session ID"}
    assert server.manager.sessions() == []


async def test_ingress_authentication(start_server: StartServer) -> None:
    server = await start_server(rtvbp={"auth": "static", "static_tokens": ["t0ken"]})
    with pytest.raises(ConnectError) as error:
        await VoiceCall.dial(server.media_url)
    assert error.value.status == 401
    voice = await VoiceCall.dial(server.media_url, bearer_token="t0ken")
    await voice.hangup()
    await wait_until(lambda: not server.manager.sessions())  # a parked call takes its session
    await settled(server)


async def test_voice_peer_that_leaves_mid_initialize_leaves_nothing(
    server: ServerHandle,
) -> None:
    request = {
        "version": "1",
        "id": "init-1",
        "method": "session.initialize",
        "params": {
            "application": {"id": "a"},
            "call": {"id": "c", "session_id": "s", "from": "1", "to": "2"},
            "audio_codec_offerings": [msgspec.to_builtins(L16_8K)],
            "metadata": None,
        },
    }
    for _ in range(3):
        socket = await server.http.ws_connect(server.media_url, protocols=("rtvbp.v1",))
        await socket.send_str(msgspec.json.encode(request).decode())
        await socket.close()
    await asyncio.sleep(0.3)
    await wait_until(lambda: not server.manager.sessions())
    await settled(server)


async def test_voice_peer_without_usable_codec_or_initialize(start_server: StartServer) -> None:
    server = await start_server(rtvbp={"initialize_timeout_secs": 0.3})
    with pytest.raises(RemoteError) as refused:
        await VoiceCall.dial(server.media_url, codecs=[bf.AudioCodec.l16(8001)])
    assert refused.value.code == 400
    socket = await server.http.ws_connect(server.media_url, protocols=("rtvbp.v1",))
    message = await socket.receive(timeout=5)
    assert message.type is aiohttp.WSMsgType.CLOSE and message.data == 1008
    await socket.close()
    assert server.manager.sessions() == []
    await settled(server)


async def test_unclaimed_call_is_hung_up_and_its_session_destroyed(
    start_server: StartServer,
) -> None:
    server = await start_server(rtvbp={"park_timeout_secs": 0.3})
    subscriber = await server.connect()
    await subscriber.result("calls.subscribe")
    voice = await VoiceCall.dial(server.media_url)
    session_id = (await subscriber.next_event("call.incoming"))["session_id"]
    outcome = await asyncio.wait_for(voice.wait_ended(), 5)
    assert (outcome.kind, outcome.detail) == ("application-hangup", "not claimed")
    await voice.close()
    assert server.manager.get(session_id) is None
    await subscriber.result("calls.unsubscribe")
    second = await VoiceCall.dial(server.media_url)
    await second.hangup()  # a parked call that ends takes its session with it
    await wait_until(lambda: not server.manager.sessions())
    assert not subscriber.events  # unsubscribed: no call.incoming for the second call
    await settled(server)
