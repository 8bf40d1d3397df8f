"""The SDK both ways over real sockets: an Application served by aiohttp, dialled by a VoiceCall."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
import pytest

from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.application import Application, Call
from callbridge.rtvbp.auth import StaticTokenAuthenticator
from callbridge.rtvbp.codecs import prefer_sample_rate
from callbridge.rtvbp.errors import RemoteError, RtvbpError, SessionClosedError
from callbridge.rtvbp.voice import ProtocolViolationError, VoiceCall
from callbridge.rtvbp.websocket import ConnectError
from tests.conftest import serve_app, serve_application, wait_until

L16_8K = bf.AudioCodec.l16(8000)
L16_16K = bf.AudioCodec.l16(16000)
L16_24K = bf.AudioCodec.l16(24000)

# Every call here runs over both listeners: aiohttp and picows.
pytestmark = pytest.mark.usefixtures("application_listener")


def numbered_frame(index: int, frame_bytes: int) -> bytes:
    return index.to_bytes(2, "little") * (frame_bytes // 2)


async def echo(call: Call) -> None:
    async for frame in call.audio():
        await call.send_audio(frame)


async def drain_playout(voice: VoiceCall, frames: int, timeout: float = 3.0) -> list[bytes]:
    received: list[bytes] = []

    def collect() -> bool:
        while (frame := voice.read_frame()) is not None:
            received.append(frame)
        return len(received) >= frames

    await wait_until(collect, timeout)
    return received


async def test_echo_round_trip_is_byte_exact(task_baseline: Callable[[], Awaitable[None]]) -> None:
    application = Application(echo)
    async with serve_application(application) as url:
        voice = await VoiceCall.dial(url, codecs=[L16_16K])
        assert voice.codec == L16_16K and voice.frame_bytes == 640
        sent = [numbered_frame(index, 640) for index in range(25)]
        for frame in sent:
            await voice.send_audio(frame)
        assert await drain_playout(voice, 25) == sent
        await voice.hangup()
        assert voice.end_reason is not None and voice.end_reason.kind == "hangup"
    await task_baseline()


async def test_audio_callback_echo_keeps_order_behind_a_pending_partial_frame(
    task_baseline: Callable[[], Awaitable[None]],
) -> None:
    """`on_audio` + `send_audio_nowait` (picows: on the socket's callback; aiohttp: on the
    reader, sent by the session's writer): what was sent before comes first, nothing is lost."""
    half = b"\x07" * 160

    async def relay(call: Call) -> None:
        await call.send_audio(half)  # a partial frame, pending in the chunker
        call.on_audio(call.send_audio_nowait)
        await call.wait_ended()

    application = Application(relay)
    async with serve_application(application) as url:
        voice = await VoiceCall.dial(url, codecs=[L16_8K])
        sent = [numbered_frame(index, 320) for index in range(25)]
        for frame in sent:
            await voice.send_audio(frame)
        stream = half + b"".join(sent)
        assert await drain_playout(voice, 25) == [
            stream[start : start + 320] for start in range(0, 25 * 320, 320)
        ]
        call = next(iter(application.active_calls))
        assert call.session.stats.audio_frames_out == 25
        assert call.session.stats.audio_frames_out_dropped == 0
        with pytest.raises(ValueError):
            call.send_audio_nowait(bytes(319))
        await voice.hangup()
    await task_baseline()


async def test_audio_callback_failures_are_counted_and_audio_goes_back_to_the_iterator(
    caplog: pytest.LogCaptureFixture,
) -> None:
    heard: list[bytes] = []
    switched = asyncio.Event()

    async def switching(call: Call) -> None:
        def fail(frame: bytes) -> None:
            heard.append(frame)
            raise RuntimeError("callback bug")

        call.on_audio(fail)
        await wait_until(lambda: len(heard) >= 3)
        call.on_audio(None)
        switched.set()
        async for frame in call.audio():
            await call.send_audio(frame)

    application = Application(switching)
    async with serve_application(application) as url:
        voice = await VoiceCall.dial(url, codecs=[L16_8K])
        for index in range(3):
            await voice.send_audio(numbered_frame(index, 320))
        await asyncio.wait_for(switched.wait(), 3)
        await voice.send_audio(numbered_frame(9, 320))
        assert await drain_playout(voice, 1) == [numbered_frame(9, 320)]
        call = next(iter(application.active_calls))
        assert call.session.stats.audio_sink_errors == 3
        await voice.hangup()
    assert heard == [numbered_frame(index, 320) for index in range(3)]
    assert caplog.text.count("audio sink failed") == 1


async def test_playout_frames_plays_buffered_audio_then_silence() -> None:
    async with serve_application(Application(echo)) as url:
        voice = await VoiceCall.dial(url)
        sent = numbered_frame(9, 320)
        await voice.send_audio(sent)
        await wait_until(lambda: voice.playout is not None and len(voice.playout) > 0)
        played: list[bytes] = []
        async for frame in voice.playout_frames():
            played.append(frame)
            if len(played) == 2:
                break
        assert played == [sent, bytes(320)]
        await voice.hangup()


async def test_first_audio_after_initialize_is_not_lost() -> None:
    """Audio the application sends right after answering initialize reaches the voice peer."""

    async def greeter(call: Call) -> None:
        await call.send_audio(numbered_frame(7, call.frame_bytes) * 5)
        await call.wait_ended()

    async with serve_application(Application(greeter)) as url:
        voice = await VoiceCall.dial(url)
        frames = await drain_playout(voice, 5)
        assert frames == [numbered_frame(7, 320)] * 5
        assert voice.session.stats.audio_messages_dropped == 0
        await voice.hangup()


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 48000])
async def test_any_offered_l16_rate(rate: int) -> None:
    async with serve_application(Application(echo)) as url:
        voice = await VoiceCall.dial(url, codecs=[bf.AudioCodec.l16(rate)])
        frame = numbered_frame(3, rate // 50 * 2)
        await voice.send_audio(frame)
        assert await drain_playout(voice, 1) == [frame]
        await voice.hangup()


async def test_codec_choice_default_and_preference() -> None:
    chosen: list[bf.AudioCodec] = []

    async def record(call: Call) -> None:
        chosen.append(call.codec)

    async with serve_application(Application(record)) as url:
        voice = await VoiceCall.dial(url, codecs=[L16_8K, L16_16K])
        await voice.wait_ended()
    async with serve_application(
        Application(record, choose_codec=prefer_sample_rate(16000))
    ) as url:
        voice = await VoiceCall.dial(url, codecs=[L16_8K, L16_16K])
        await voice.wait_ended()
    assert chosen == [L16_8K, L16_16K]


async def test_no_supported_codec_is_a_400() -> None:
    pcmu = bf.AudioCodec(id="PCMU/8000/1", name="PCMU", sample_rate=8000, bit_depth=8, channels=1)
    async with serve_application(Application(echo)) as url:
        with pytest.raises(RemoteError) as raised:
            await VoiceCall.dial(url, codecs=[pcmu])
    assert raised.value.code == 400 and "PCMU/8000/1" in raised.value.message


async def test_chooser_returning_an_unoffered_codec_is_a_500() -> None:
    def wrong(offers: Sequence[bf.AudioCodec]) -> bf.AudioCodec:
        return L16_24K

    async with serve_application(Application(echo, choose_codec=wrong)) as url:
        with pytest.raises(RemoteError) as raised:
            await VoiceCall.dial(url, codecs=[L16_8K])
    assert raised.value.code == 500


async def test_voice_rejects_a_codec_it_did_not_offer() -> None:
    """An application answering initialize with an unoffered codec fails the dial."""
    from aiohttp import web

    from callbridge.rtvbp.catalog import Role
    from callbridge.rtvbp.session import IncomingRequest, RtvbpSession
    from callbridge.rtvbp.websocket import accept

    async def rogue(request: web.Request) -> web.StreamResponse:
        accepted = await accept(request)
        session = RtvbpSession(Role.APPLICATION, bf.CATALOG, accepted.transport)

        async def initialize(incoming: IncomingRequest) -> bf.SessionInitializeResponse:
            return bf.SessionInitializeResponse(audio_codec=L16_24K)

        session.handle("session.initialize", initialize)
        async with session:
            await session.wait_closed()
        return accepted.response

    app = web.Application()
    app.router.add_get("/rtvbp", rogue)
    async with serve_app(app) as address:
        with pytest.raises(ProtocolViolationError, match="L16/24000/1"):
            await VoiceCall.dial(f"ws://{address}/rtvbp", codecs=[L16_8K])


async def test_audio_resampled_for_a_model_rate() -> None:
    """call.audio(sample_rate=16000) on an 8 kHz call yields 16 kHz frames, same pitch."""
    collected: list[bytes] = []

    async def listen(call: Call) -> None:
        async for frame in call.audio(sample_rate=16000):
            collected.append(frame)

    async with serve_application(Application(listen)) as url:
        voice = await VoiceCall.dial(url, codecs=[L16_8K])
        t = np.arange(8000) / 8000
        tone = (8000 * np.sin(2 * np.pi * 1000 * t)).astype("<i2").tobytes()
        await voice.send_audio(tone)
        await wait_until(lambda: len(collected) >= 50)
        await voice.hangup()
    assert {len(frame) for frame in collected} == {640}
    samples = np.frombuffer(b"".join(collected[10:50]), dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * 16000 / len(samples)
    assert abs(peak_hz - 1000) < 30


async def test_send_audio_of_any_length_becomes_exact_frames() -> None:
    async def speak(call: Call) -> None:
        await call.send_audio(b"\x01\x00" * 250)  # 500 bytes: one frame + 180 pending
        await call.send_audio(b"\x02\x00" * 100)  # 200 more: a second frame + 60 pending
        await call.flush_audio()  # the 60 bytes, padded to a frame
        await call.wait_ended()

    async with serve_application(Application(speak)) as url:
        voice = await VoiceCall.dial(url)
        frames = await drain_playout(voice, 3)
        assert [len(frame) for frame in frames] == [320, 320, 320]
        joined = b"".join(frames)
        assert joined[:700] == b"\x01\x00" * 250 + b"\x02\x00" * 100
        assert joined[700:] == bytes(260)
        await voice.hangup()


async def test_barge_in_clears_exactly_the_unplayed_audio() -> None:
    cleared: list[int] = []
    ready = asyncio.Event()
    barge = asyncio.Event()

    async def talker(call: Call) -> None:
        await call.send_audio(bytes(320 * 100))  # 2 s of audio, sent at once
        ready.set()
        await barge.wait()
        await call.speech_started()
        cleared.append(await call.clear_audio())
        await call.wait_ended()

    async with serve_application(Application(talker)) as url:
        voice = await VoiceCall.dial(url)
        await ready.wait()
        await wait_until(lambda: voice.playout is not None and len(voice.playout) == 320 * 100)
        for _ in range(30):
            assert voice.read_frame() is not None
        barge.set()
        await wait_until(lambda: bool(cleared))
        assert cleared == [320 * 70]
        assert voice.read_frame() is None
        events = voice.events()
        assert isinstance(await anext(events), bf.AudioSpeechStartedEvent)
        await voice.hangup()


async def test_realtime_send_is_stopped_by_clear() -> None:
    sent_frames: list[int] = []

    async def paced(call: Call) -> None:
        speaking = call.spawn(call.send_audio(bytes(320 * 200), realtime=True))
        await asyncio.sleep(0.2)
        await call.clear_audio()
        await speaking
        sent_frames.append(call.session.stats.audio_frames_out)
        await call.wait_ended()

    async with serve_application(Application(paced)) as url:
        voice = await VoiceCall.dial(url)
        await wait_until(lambda: bool(sent_frames))
        await voice.hangup()
    # ~0.2 s of paced audio plus the 60 ms lead, far from the 200 frames queued.
    assert 5 <= sent_frames[0] <= 30


async def test_dtmf_reaches_the_application_in_order() -> None:
    digits: list[bf.DtmfEvent] = []

    async def keys(call: Call) -> None:
        async for event in call.dtmf():
            digits.append(event)

    async with serve_application(Application(keys)) as url:
        voice = await VoiceCall.dial(url)
        for digit in "1#*":
            await voice.send_dtmf(digit, hold_ms=5)
        await wait_until(lambda: len(digits) == 3)
        await voice.hangup()
    assert [event.digit for event in digits] == ["1", "#", "*"]
    assert [event.seq for event in digits] == [0, 1, 2]
    assert all(event.pressed_at <= event.released_at for event in digits)


async def test_send_dtmf_rejects_bad_digits() -> None:
    async with serve_application(Application(echo)) as url:
        voice = await VoiceCall.dial(url)
        with pytest.raises(ValueError, match="DTMF digit"):
            await voice.send_dtmf("x")
        await voice.hangup()


async def test_application_hangup_ends_the_call_with_its_reason() -> None:
    async def short(call: Call) -> None:
        await call.hangup("done talking")

    async with serve_application(Application(short)) as url:
        voice = await VoiceCall.dial(url)
        end = await voice.wait_ended()
    assert (end.kind, end.detail) == ("application-hangup", "done talking")


async def test_caller_hangup_reaches_the_handler() -> None:
    reasons: list[str | None] = []

    async def wait(call: Call) -> None:
        async for _ in call.audio():
            pass
        reasons.append(await call.wait_ended())

    async with serve_application(Application(wait)) as url:
        voice = await VoiceCall.dial(url)
        await voice.hangup("caller left")
        await wait_until(lambda: bool(reasons))
    assert reasons == ["caller left"]


async def test_spawned_task_failures_are_collected_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A DTMF handler that clears audio as the caller hangs up ends quietly, not unretrieved."""
    spawned: list[asyncio.Task[Any]] = []

    async def clear_after_hangup(call: Call) -> None:
        await call.wait_ended()
        await call.clear_audio()

    async def fail() -> None:
        raise ValueError("boom")

    async def on_dtmf(call: Call) -> None:
        async for _ in call.dtmf():
            spawned.append(call.spawn(clear_after_hangup(call)))
            spawned.append(call.spawn(fail()))
        await call.wait_ended()

    caplog.set_level(logging.DEBUG, logger="callbridge.rtvbp.application")
    async with serve_application(Application(on_dtmf)) as url:
        voice = await VoiceCall.dial(url)
        await voice.send_dtmf("5", hold_ms=0)
        await wait_until(lambda: len(spawned) == 2)
        await voice.hangup("caller left")
        await wait_until(lambda: all(task.done() for task in spawned))
    assert isinstance(spawned[0].exception(), SessionClosedError)
    records = [record for record in caplog.records if "spawned task" in record.getMessage()]
    assert [record.levelno for record in records] == [logging.INFO, logging.DEBUG]
    assert "boom" in records[0].getMessage()


async def test_move_reports_the_next_application() -> None:
    moved: list[str | None] = []

    async def mover(call: Call) -> None:
        moved.append(await call.move("billing", reason="handoff"))

    async with serve_application(Application(mover)) as url:
        voice = await VoiceCall.dial(url)
        end = await voice.wait_ended()
    assert moved == ["billing"]
    assert (end.kind, end.detail) == ("application-move", "billing")


async def test_handler_return_and_failure_hang_up() -> None:
    async def returns(call: Call) -> None:
        return None

    async def fails(call: Call) -> None:
        raise RuntimeError("boom")

    ends = []
    for handler in (returns, fails):
        async with serve_application(Application(handler)) as url:
            voice = await VoiceCall.dial(url)
            ends.append(await voice.wait_ended())
    assert [(end.kind, end.detail) for end in ends] == [
        ("application-hangup", "application finished"),
        ("application-hangup", "application error"),
    ]


async def test_session_variables_and_ping() -> None:
    seen: dict[str, Any] = {}

    async def ivr(call: Call) -> None:
        await call.set_variables({"customer": "Ada", "attempt": 2})
        seen["some"] = await call.get_variables("customer", "missing")
        seen["all"] = await call.get_variables()
        seen["rtt"] = await call.ping()
        await call.hangup("done")

    async with serve_application(Application(ivr)) as url:
        voice = await VoiceCall.dial(url)
        await voice.wait_ended()
    assert seen["some"] == {"customer": "Ada"}
    assert seen["all"] == {"customer": "Ada", "attempt": 2}
    assert seen["rtt"] >= 0
    assert voice.variables == {"customer": "Ada", "attempt": 2}


class ListRecorder:
    """A minimal real Recorder: ids are issued and tracked."""

    def __init__(self) -> None:
        self.active: dict[str, Sequence[str] | None] = {}

    async def start(self, tags: Sequence[str] | None) -> str:
        recording_id = f"rec-{len(self.active) + 1}"
        self.active[recording_id] = tags
        return recording_id

    async def stop(self, recording_id: str) -> None:
        del self.active[recording_id]


async def test_recording_with_a_recorder_of_ones_own() -> None:
    outcomes: list[Any] = []

    async def recorder_user(call: Call) -> None:
        try:
            recording_id = await call.start_recording(["support"])
            outcomes.append(recording_id)
            await call.stop_recording(recording_id)
            await call.stop_recording(recording_id)
        except RemoteError as error:
            outcomes.append((error.code, error.message))
        await call.hangup("done")

    async with serve_application(Application(recorder_user)) as url:
        recorder = ListRecorder()
        await (await VoiceCall.dial(url, recorder=recorder)).wait_ended()
    assert outcomes[0] == "rec-1"
    assert outcomes[1] == (500, "recording 'rec-1' is not active")


async def test_application_events_reach_the_voice_peer() -> None:
    async def narrator(call: Call) -> None:
        await call.tool_call("lookup_order")
        await call.input_transcript("where is my order")
        await call.output_transcript_delta("It ships ")
        await call.output_transcript_done("It ships today.")
        await call.output_transcript_done("")
        await call.hangup("done")

    async with serve_application(Application(narrator)) as url:
        voice = await VoiceCall.dial(url)
        events = [event async for event in voice.events()]
    assert events == [
        bf.AgentToolCallEvent(name="lookup_order"),
        bf.InputTranscriptEvent(delta="where is my order"),
        bf.OutputTranscriptDeltaEvent(delta="It ships "),
        bf.OutputTranscriptDoneEvent(text="It ships today."),
        bf.OutputTranscriptDoneEvent(text=""),
    ]


async def test_audio_info_and_session_updated_reach_the_application() -> None:
    received: list[Any] = []

    async def observer(call: Call) -> None:
        async for event in call.events():
            received.append(event)

    async with serve_application(Application(observer)) as url:
        voice = await VoiceCall.dial(url, audio_info_interval_s=0.05)
        await voice.send_audio(bytes(320 * 5))
        await wait_until(lambda: any(isinstance(e, bf.AudioInfoEvent) for e in received))
        await voice.hangup("bye")
        await wait_until(lambda: any(isinstance(e, bf.CallHangupEvent) for e in received))
    assert isinstance(received[0], bf.SessionUpdatedEvent)
    assert received[0].audio_codec == L16_8K
    totals = [e.write.bytes_total for e in received if isinstance(e, bf.AudioInfoEvent)]
    assert max(totals) == 320 * 5


async def test_authentication_before_the_call() -> None:
    application = Application(echo, authenticator=StaticTokenAuthenticator(["s3cret"]))
    async with serve_application(application) as url:
        with pytest.raises(ConnectError) as refused:
            await VoiceCall.dial(url)
        assert refused.value.status == 401
        with pytest.raises(ConnectError):
            await VoiceCall.dial(url, bearer_token="wrong")
        voice = await VoiceCall.dial(url, bearer_token="s3cret")
        await voice.hangup()
    assert not application.active_calls


async def test_abrupt_disconnect_ends_the_call(
    task_baseline: Callable[[], Awaitable[None]],
) -> None:
    ended: list[str | None] = []

    async def wait(call: Call) -> None:
        ended.append(await call.wait_ended())

    application = Application(wait)
    async with serve_application(application) as url:
        voice = await VoiceCall.dial(url)
        await wait_until(lambda: bool(application.active_calls))
        transport = voice.session._transport  # drop the socket without a close handshake
        socket = getattr(transport, "_socket", None) or getattr(transport, "socket", None)
        assert socket is not None
        socket._response.connection.transport.abort()  # type: ignore[union-attr]
        await wait_until(lambda: bool(ended))
        await voice.close()
    assert ended[0] is not None and "connection lost" in ended[0]
    assert not application.active_calls
    await task_baseline()


async def test_operations_after_the_call_ended_raise() -> None:
    calls: list[Call] = []

    async def keep(call: Call) -> None:
        calls.append(call)
        await call.wait_ended()

    async with serve_application(Application(keep)) as url:
        voice = await VoiceCall.dial(url)
        await wait_until(lambda: bool(calls))
        await voice.hangup()
        await wait_until(lambda: calls[0].ended)
        with pytest.raises(RtvbpError):
            await calls[0].send_audio(bytes(320))
