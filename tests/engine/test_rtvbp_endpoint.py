"""Outbound RTVBP legs (callbridge dials an application) over real sockets: an SDK application
served by aiohttp, real UDP phones, the real media clock."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from callbridge.engine.errors import EngineError
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.rtvbp_control import (
    create_rtvbp,
    default_offers,
    parse_codecs,
    preferred_rate,
)
from callbridge.engine.rtvbp_endpoint import RtvbpEndpoint
from callbridge.engine.rtvbp_outbound import OutboundRtvbpEndpoint, display_url
from callbridge.engine.session import MediaSession
from callbridge.engine.tone_endpoint import create_tone
from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.application import Application, Call
from callbridge.rtvbp.auth import StaticTokenAuthenticator
from callbridge.rtvbp.errors import RemoteError
from tests.conftest import serve_application, wait_until
from tests.engine.engine_peers import EventLog, engine_config
from tests.engine.rtvbp_support import (
    Phone,
    codec_answer,
    echo,
    raw_rtvbp_server,
    rms,
    strongest,
    tone_frame,
)


@pytest.fixture
async def engine(
    tmp_path: Path, task_baseline: Callable[[], Awaitable[None]]
) -> AsyncIterator[SessionManager]:
    """A started manager with short RTVBP timeouts; at the end no task may be left."""
    manager = SessionManager(
        engine_config(tmp_path, rtvbp_request_timeout_s=0.5, rtvbp_connect_timeout_s=2.0)
    )
    await manager.start()
    yield manager
    await manager.shutdown(0)
    await task_baseline()


async def settled(manager: SessionManager) -> None:
    """Wait until the engine's background work (dials, hang-ups) is over."""
    await wait_until(lambda: not manager.context.tasks, 5.0)


async def phone_in(session: MediaSession) -> tuple[str, Phone]:
    phone = await Phone.open()
    endpoint_id, answer = await create_from_offer(
        session, phone.peer.offer("pcmu", 101), "sendrecv"
    )
    phone.peer.use(answer)
    phone.start()
    return endpoint_id, phone


async def connected(session: MediaSession, events: EventLog, endpoint_id: str) -> RtvbpEndpoint:
    def changed() -> bool:
        return any(
            data
            == {"endpoint_id": endpoint_id, "old_state": "connecting", "new_state": "connected"}
            for data in events.named("endpoint.state_changed")
        )

    await wait_until(changed)
    endpoint = session.endpoints[endpoint_id]
    assert isinstance(endpoint, RtvbpEndpoint)
    return endpoint


async def ended(events: EventLog, endpoint_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next(
            (
                data
                for data in events.named("endpoint.rtvbp.ended")
                if data["endpoint_id"] == endpoint_id
            ),
            None,
        )

    await wait_until(lambda: found() is not None, 5.0)
    result = found()
    assert result is not None
    return result


@pytest.mark.parametrize(
    ("codecs", "rate"), [(None, 8000), (["L16/16000/1"], 16000), ([24000], 24000)]
)
async def test_phone_hears_itself_through_an_echo_agent(
    engine: SessionManager, codecs: list[Any] | None, rate: int
) -> None:
    """PCMU/8000 on the phone, L16 at the negotiated rate toward the agent, and back."""
    async with serve_application(Application(echo)) as url:
        events = EventLog()
        session = engine.create_session(events)
        _, phone = await phone_in(session)
        endpoint_id = await create_rtvbp(session, url, codecs=codecs)
        assert session.endpoints[endpoint_id].state == "connecting"
        endpoint = await connected(session, events, endpoint_id)
        assert endpoint.codec == f"L16/{rate}"
        assert endpoint.audio_codec == bf.AudioCodec.l16(rate)
        phone.say(440)
        start = time.monotonic() + 0.4
        await asyncio.sleep(1.4)
        heard = phone.heard_pcm(since=start)
        assert len(heard) >= 320 * 40
        assert abs(strongest(heard, 8000)[0] - 440) < 15
        phone.say(1000)
        await asyncio.sleep(0.6)
        assert abs(strongest(phone.heard_pcm(since=time.monotonic() - 0.3), 8000)[0] - 1000) < 15
        assert endpoint.frames_dropped == 0
        await phone.close()
        await session.destroy()
        await settled(engine)


async def test_added_latency_of_the_echo_path(engine: SessionManager) -> None:
    """RTP -> RTVBP -> echo agent -> RTVBP -> RTP: measured and printed, not asserted."""
    async with serve_application(Application(echo)) as url:
        events = EventLog()
        session = engine.create_session(events)
        _, phone = await phone_in(session)
        endpoint_id = await create_rtvbp(session, url, codecs=["L16/16000"])
        await connected(session, events, endpoint_id)
        bursts: list[int] = []
        period = 15  # frames: a 60 ms burst of tone every 300 ms

        def source(index: int) -> bytes | None:
            if index % period == 0 and index >= period:
                bursts.append(index)
            if index % period < 3 and index >= period:
                return tone_frame(700, 8000, index)
            return None

        phone.source = source
        await asyncio.sleep(0.3 + 21 * period * 0.02)
        phone.source = lambda index: None
        await asyncio.sleep(0.2)
        latencies = []
        for index in bursts[:-1]:
            sent = phone.sent_at[index]
            onset = next(
                (arrival for arrival, pcm in phone.heard if arrival > sent and rms(pcm) > 1500),
                None,
            )
            if onset is not None and onset - sent < 0.4:
                latencies.append((onset - sent) * 1000)
        assert len(latencies) >= len(bursts) - 3
        latencies.sort()
        p50 = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
        print(
            f"\nRTP->RTVBP->RTP echo, PCMU/8000 <-> L16/16000, {len(latencies)} bursts:"
            f" added latency p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms"
        )
        await phone.close()
        await session.destroy()
        await settled(engine)


async def test_barge_in_by_the_agent_clears_exactly_the_unplayed_audio(
    engine: SessionManager,
) -> None:
    """The agent sends 3 s of speech at once; its audio.buffer.clear empties the playout
    buffer, answers the bytes it dropped, and the phone hears nothing more."""
    answers: list[int] = []
    done = asyncio.Event()

    async def talker(call: Call) -> None:
        speech = b"".join(tone_frame(500, call.sample_rate, index) for index in range(150))
        await call.send_audio(speech)
        await asyncio.sleep(0.5)
        answers.append(await call.clear_audio())
        done.set()
        await call.wait_ended()

    async with serve_application(Application(talker)) as url:
        events = EventLog()
        session = engine.create_session(events)
        _, phone = await phone_in(session)
        endpoint_id = await create_rtvbp(session, url)
        endpoint = await connected(session, events, endpoint_id)
        assert isinstance(endpoint, OutboundRtvbpEndpoint) and endpoint.voice is not None
        await asyncio.wait_for(done.wait(), 5)
        cleared_at = time.monotonic()
        played = endpoint.voice._read_bytes
        assert 0 < answers[0] < 150 * 320
        assert answers[0] + played == 150 * 320
        assert endpoint.voice.playout is not None and len(endpoint.voice.playout) == 0
        await asyncio.sleep(0.3)
        assert rms(phone.heard_pcm(since=cleared_at + 0.1)) < 200
        await phone.close()
        await session.destroy()
        await settled(engine)


async def test_phone_digits_reach_the_agent_as_dtmf_events(engine: SessionManager) -> None:
    digits: list[bf.DtmfEvent] = []

    async def listener(call: Call) -> None:
        async for event in call.dtmf():
            digits.append(event)

    async with serve_application(Application(listener)) as url:
        events = EventLog()
        session = engine.create_session(events)
        phone_id, phone = await phone_in(session)
        endpoint_id = await create_rtvbp(session, url)
        await connected(session, events, endpoint_id)
        await asyncio.sleep(0.1)
        phone.press("5", 100)
        await asyncio.sleep(0.1)
        phone.press("#", 60)
        await wait_until(lambda: len(digits) == 2)
        assert [(event.seq, event.digit) for event in digits] == [(0, "5"), (1, "#")]
        assert digits[0].released_at - digits[0].pressed_at == 100
        assert [data["digit"] for data in events.named("dtmf")] == ["5", "#"]
        assert all(data["endpoint_id"] == phone_id for data in events.named("dtmf"))
        await session.dtmf_inject(endpoint_id, "7", 120, 10)  # toward the agent itself
        await wait_until(lambda: len(digits) == 3)
        assert (digits[2].seq, digits[2].digit) == (2, "7")
        await phone.close()
        await session.destroy()
        await settled(engine)


@pytest.mark.parametrize(
    ("action", "reason", "detail"),
    [
        ("hangup", "application-hangup", "bye"),
        ("move", "application-move", "app-2"),
    ],
)
async def test_agent_ends_the_leg_and_says_why(
    engine: SessionManager, action: str, reason: str, detail: str
) -> None:
    async def agent(call: Call) -> None:
        await asyncio.sleep(0.2)
        if action == "hangup":
            await call.hangup("bye")
        else:
            await call.move("app-2", reason="handoff")

    async with serve_application(Application(agent)) as url:
        events = EventLog()
        session = engine.create_session(events)
        endpoint_id = await create_rtvbp(session, url)
        assert (await ended(events, endpoint_id)) == {
            "endpoint_id": endpoint_id,
            "reason": reason,
            "detail": detail,
        }
        await wait_until(lambda: endpoint_id not in session.endpoints)
        await session.destroy()
        await settled(engine)


async def test_variables_recording_and_agent_events(engine: SessionManager) -> None:
    seen: dict[str, Any] = {}

    async def agent(call: Call) -> None:
        seen["before"] = await call.get_variables()
        await call.set_variables({"customer": "Ada", "attempt": 2})
        recording_id = await call.start_recording(["support"])
        seen["recording"] = recording_id
        await asyncio.sleep(0.1)
        await call.stop_recording(recording_id)
        try:
            await call.stop_recording(recording_id)
        except RemoteError as error:
            seen["stopped twice"] = error.code
        await call.speech_started()
        await call.tool_call("lookup")
        await call.input_transcript("hello")
        await call.output_transcript_delta("Hi")
        await call.output_transcript_done()
        await call.wait_ended()

    async with serve_application(Application(agent)) as url:
        events = EventLog()
        session = engine.create_session(events)
        session.set_variables({"queue": "gold"})
        endpoint_id = await create_rtvbp(session, url, metadata={"recording_consent": True})
        await connected(session, events, endpoint_id)
        await events.wait_for("rtvbp.event", 5)
        assert seen["before"] == {"queue": "gold"}
        assert session.get_variables(None) == {
            "queue": "gold",
            "customer": "Ada",
            "attempt": 2,
        }
        assert session.get_variables(["attempt", "missing"]) == {"attempt": 2}
        recording = engine.config.recording_dir / f"rtvbp-{endpoint_id}-1.wav"
        assert seen["stopped twice"] == 500 and recording.exists()
        assert [(data["event"], data["data"]) for data in events.named("rtvbp.event")] == [
            ("audio.speech.started", {"origin": "sender"}),
            ("agent.tool.call", {"name": "lookup"}),
            ("input.transcript", {"delta": "hello"}),
            ("output.transcript.delta", {"delta": "Hi"}),
            ("output.transcript.done", {}),
        ]
        assert all(data["endpoint_id"] == endpoint_id for data in events.named("rtvbp.event"))
        info = session.endpoints[endpoint_id].info()
        assert info["endpoint_type"] == "rtvbp" and info["codec"] == "L16/8000"
        assert info["rtvbp"]["role"] == "voice"
        assert info["rtvbp"]["metadata"] == {"recording_consent": True}
        assert info["rtvbp"]["call"]["session_id"] == session.id
        await session.destroy()
        await settled(engine)


@pytest.mark.parametrize(("remove", "reason"), [(True, "removed"), (False, "session destroyed")])
async def test_removing_the_leg_hangs_up_gracefully(
    engine: SessionManager, remove: bool, reason: str
) -> None:
    calls: list[Call] = []

    async def agent(call: Call) -> None:
        calls.append(call)
        await call.wait_ended()

    async with serve_application(Application(agent)) as url:
        events = EventLog()
        session = engine.create_session(events)
        endpoint_id = await create_rtvbp(session, url)
        await connected(session, events, endpoint_id)
        if remove:
            await session.remove_endpoint(endpoint_id)
        else:
            await session.destroy()
        await wait_until(lambda: calls[0].ended)
        assert calls[0].hangup_reason == reason
        assert not events.named("endpoint.rtvbp.ended")  # the controller asked for it
        await session.destroy()
        await settled(engine)


async def test_dial_failures_end_the_leg_with_a_clear_reason(engine: SessionManager) -> None:
    events = EventLog()
    session = engine.create_session(events)

    async def failure(url: str, **options: Any) -> str:
        endpoint_id = await create_rtvbp(session, url, **options)
        detail = await ended(events, endpoint_id)
        assert detail["reason"] == "failed"
        assert endpoint_id not in session.endpoints
        return str(detail["detail"])

    assert "cannot connect" in await failure("ws://127.0.0.1:9/agent")
    locked = Application(echo, authenticator=StaticTokenAuthenticator(["secret"]))
    async with serve_application(locked) as url:
        assert "401" in await failure(url)
        assert "401" in await failure(url, bearer_token="wrong")
        endpoint_id = await create_rtvbp(session, url, bearer_token="secret")
        await connected(session, events, endpoint_id)
        await session.remove_endpoint(endpoint_id)
        await settled(engine)
    async with serve_application(Application(echo, choose_codec=lambda offers: None)) as url:
        detail = await failure(url)
        assert detail.startswith("application refused session.initialize: 400 none of the")
    async with raw_rtvbp_server(lambda frame: None) as url:
        assert "no response" in await failure(url)
    async with raw_rtvbp_server(codec_answer(16000)) as url:
        detail = await failure(url, codecs=[8000])
        assert "L16/16000/1" in detail and "offered L16/8000/1" in detail
    assert session.alive and not session.endpoints
    await session.destroy()


async def test_remove_while_dialling_cancels_the_dial(engine: SessionManager) -> None:
    async with raw_rtvbp_server(lambda frame: None) as url:
        events = EventLog()
        session = engine.create_session(events)
        endpoint_id = await create_rtvbp(session, url)
        await asyncio.sleep(0.1)
        await session.remove_endpoint(endpoint_id)
        await asyncio.sleep(0.1)
        assert not events.named("endpoint.rtvbp.ended")
        await session.destroy()
        await settled(engine)


async def test_create_validates_url_codecs_and_direction(engine: SessionManager) -> None:
    session = engine.create_session(EventLog())
    for url, options, fragment in (
        ("http://example.com/", {}, "ws:// or wss://"),
        ("ws://", {}, "ws:// or wss://"),
        ("ws://host/", {"codecs": ["PCMU/8000"]}, "L16/<rate>"),
        ("ws://host/", {"codecs": ["L16/16000/2"]}, "mono"),
        ("ws://host/", {"codecs": [8001]}, "multiple of 50"),
        ("ws://host/", {"codecs": []}, "empty"),
        ("ws://host/", {"direction": "both"}, "direction"),
    ):
        with pytest.raises(EngineError) as error:
            await create_rtvbp(session, url, **options)
        assert error.value.code == "INVALID_PARAMS" and fragment in error.value.message
    assert not session.endpoints
    await session.destroy()


async def test_default_offers_follow_the_session(engine: SessionManager) -> None:
    session = engine.create_session(EventLog())
    assert [codec.sample_rate for codec in default_offers(session)] == [
        8000,
        16000,
        24000,
        48000,
    ]
    _, phone = await phone_in(session)
    assert preferred_rate(session) == 8000
    other = await Phone.open()
    await create_from_offer(session, other.peer.offer("g722", 101), "sendrecv")
    assert default_offers(session)[0].sample_rate == 16000
    await create_tone(session, "sine", 5000, None)  # above 3800 Hz: generated at 48 kHz
    assert default_offers(session)[0].sample_rate == 48000
    await phone.close()
    other.peer.close()
    await session.destroy()


def test_codec_parsing_and_helpers() -> None:
    assert parse_codecs(["L16/16000/1", "l16/8000", 16000, 24000]) == [
        bf.AudioCodec.l16(16000),
        bf.AudioCodec.l16(8000),
        bf.AudioCodec.l16(24000),
    ]
    assert display_url("wss://user:pw@agent.example:8443/v1?token=abc#x") == (
        "wss://agent.example:8443/v1"
    )
