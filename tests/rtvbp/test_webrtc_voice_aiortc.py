"""VoiceCall's rtvbp.webrtc.v1 offerer against an application whose audio is aiortc.

The application (`AiortcApplication`) answers the offer with aiortc and runs the catalog as a
plain RTVBP session: our full-ICE offerer, DTLS role and PCMU pacing are judged by a WebRTC
stack written elsewhere. Everything stays on loopback (no ICE servers, aioice pinned).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.voice import EndReason
from callbridge.rtvbp.webrtc import WEBRTC_PROFILE, WebRtcOptions
from callbridge.rtvbp.webrtc_media import PEER_CLOSE_GRACE_S
from callbridge.rtvbp.webrtc_transport import WebRtcTransport
from tests.conftest import wait_until
from tests.engine.rtvbp_support import Caller, rms
from tests.rtvbp.webrtc_peers import AiortcApplication, AiortcAudio, tone_share

SECONDS = 2.5
"""How much of each tone must have been heard before it is judged."""


@pytest.fixture
async def application() -> AsyncIterator[tuple[AiortcApplication, str]]:
    """An aiortc application playing 440 Hz, and its URL."""
    app = AiortcApplication(440.0)
    async with app.serve() as url:
        yield app, url


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the event loop's exception handler during the test (a leaked exception)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: errors.append(context))
    yield errors
    loop.set_exception_handler(previous)


async def dial(url: str) -> Caller:
    """VoiceCall over rtvbp.webrtc.v1, talking and listening in real time (silent at first)."""
    caller = await Caller.dial(
        url,
        profiles=(WEBRTC_PROFILE,),
        webrtc=WebRtcOptions(media_address="127.0.0.1"),
        codecs=[bf.AudioCodec.l16(8000)],
    )
    assert isinstance(caller.voice.session._transport, WebRtcTransport)
    return caller


def media_of(caller: Caller) -> WebRtcTransport:
    transport = caller.voice.session._transport
    assert isinstance(transport, WebRtcTransport)
    return transport


def audio_of(app: AiortcApplication) -> AiortcAudio:
    assert app.audio is not None
    return app.audio


def loud_frames(caller: Caller) -> list[bytes]:
    return [frame for _, frame in caller.heard if rms(frame) > 500]


async def talker_stopped(caller: Caller) -> None:
    """The caller's real-time loop saw the call end and stopped by itself."""
    task = caller._task
    assert task is not None
    await asyncio.wait_for(asyncio.shield(task), 5)


async def talking(app: AiortcApplication, caller: Caller) -> None:
    """Until each side has heard the other for a while: the media is up both ways."""
    caller.say(1000)
    audio = audio_of(app)
    await wait_until(lambda: audio.loud_seconds() >= 0.5, timeout=20)
    await wait_until(lambda: len(loud_frames(caller)) >= 25, timeout=20)


async def test_tones_both_ways(application: tuple[AiortcApplication, str]) -> None:
    """1000 Hz from the voice heard by aiortc, aiortc's 440 Hz played out by the voice."""
    app, url = application
    caller = await dial(url)
    try:
        assert caller.voice.codec == bf.AudioCodec.l16(8000)
        audio = audio_of(app)
        await talking(app, caller)
        # From here on both directions are up: judge the next SECONDS of each.
        heard_from, frames_from = len(audio.heard), len(caller.heard)
        sent_from = caller.voice._written_bytes
        await wait_until(lambda: len(audio.heard) - heard_from >= SECONDS * 50, timeout=20)
        await wait_until(lambda: len(caller.heard) - frames_from >= SECONDS * 50, timeout=20)
        sent = (caller.voice._written_bytes - sent_from) / 320
        to_app = audio.heard[heard_from:]
        to_voice = [frame for _, frame in caller.heard[frames_from:]]
        # Most of what the voice sent meanwhile was heard, and most of it is the tone at its
        # pitch; the same the other way.
        assert len(to_app) >= 0.8 * sent
        assert tone_share(np.concatenate(to_app), 8000, 1000) >= 0.8
        assert audio.frequency() == pytest.approx(1000, abs=20)
        assert sum(rms(frame) > 500 for frame in to_voice) >= 0.8 * len(to_voice)
        assert tone_share(np.frombuffer(b"".join(to_voice), "<i2"), 8000, 440) >= 0.8
        assert media_of(caller).media.frames_dropped == 0
    finally:
        await caller.voice.hangup()
        await caller.stop()
    await asyncio.wait_for(app.closed.wait(), 10)
    assert app.terminations == ["hangup"] and "call.hangup" in app.events
    # Our DTLS close_notify closed aiortc's side of the association.
    await wait_until(lambda: audio.connection.connectionState == "closed", timeout=5)


async def test_dtmf_reaches_the_application_on_the_websocket(
    application: tuple[AiortcApplication, str],
) -> None:
    """In rtvbp.webrtc.v1 the offer has no telephone-event: digits are `dtmf` events on the
    control channel, as over rtvbp.v1."""
    app, url = application
    caller = await dial(url)
    try:
        [offer] = app.offers
        assert "telephone-event" not in offer
        await talking(app, caller)
        five = await caller.voice.send_dtmf("5", hold_ms=120)
        hash_ = await caller.voice.send_dtmf("#", hold_ms=60)
        await wait_until(lambda: len(app.digits) == 2, timeout=10)
        assert app.digits == [five, hash_]
        assert [digit.digit for digit in app.digits] == ["5", "#"]
        assert [digit.seq for digit in app.digits] == [0, 1]
        assert app.digits[0].released_at - app.digits[0].pressed_at >= 100
        assert app.events[0] == "session.updated"
        # The call goes on: aiortc still hears the voice.
        heard = len(audio_of(app).heard)
        await wait_until(lambda: len(audio_of(app).heard) >= heard + 25, timeout=10)
    finally:
        await caller.voice.hangup()
        await caller.stop()


async def test_the_application_hangs_up(
    application: tuple[AiortcApplication, str], loop_errors: list[dict[str, Any]]
) -> None:
    """``call.hangup`` from the application: the voice answers, closes the session and its
    media (aiortc sees the DTLS close), and says who ended the call."""
    app, url = application
    caller = await dial(url)
    try:
        await talking(app, caller)
        await asyncio.wait_for(app.hang_up("agent done"), 10)
        reason = await asyncio.wait_for(caller.voice.wait_ended(), 10)
        assert reason == EndReason("application-hangup", "agent done")
        assert app.close_info is not None and app.close_info.orderly
        assert app.terminations == []
        transport = media_of(caller)
        await wait_until(lambda: transport.media.closed, timeout=5)
        await talker_stopped(caller)
        connection = audio_of(app).connection
        await wait_until(lambda: connection.connectionState == "closed", timeout=5)
    finally:
        await caller.stop()
    assert loop_errors == []


@pytest.mark.parametrize(
    ("close_code", "expected"),
    [
        (None, EndReason("failed", "1006")),
        (1011, EndReason("failed", "1011")),
        (1000, EndReason("closed", None)),
    ],
    ids=["tcp-drop", "close-1011", "close-1000"],
)
async def test_the_application_vanishing_ends_the_call(
    application: tuple[AiortcApplication, str],
    loop_errors: list[dict[str, Any]],
    close_code: int | None,
    expected: EndReason,
) -> None:
    """aiortc closes its peer connection, then the WebSocket goes (dropped, or closed with a
    code) with no hang-up: the call ends promptly, says how, and leaves no task behind."""
    app, url = application
    caller = await dial(url)
    voice = caller.voice
    try:
        await talking(app, caller)
        await app.vanish(close_code)
        assert await asyncio.wait_for(voice.wait_ended(), 10) == expected
        transport = media_of(caller)
        assert transport.media.closed
        # The caller's loop saw the end; nothing of the call is still running.
        await talker_stopped(caller)
        await wait_until(lambda: all(task.done() for task in voice._tasks), timeout=5)
        assert transport._pump.done()
        assert voice.session._reader is not None and voice.session._reader.done()
        assert voice.session._dispatcher is not None and voice.session._dispatcher.done()
        await voice.close()
        await voice.hangup()  # after the end: nothing to do, no error
    finally:
        await caller.stop()
    assert loop_errors == []


async def test_the_application_closing_only_its_media_ends_the_call(
    application: tuple[AiortcApplication, str], loop_errors: list[dict[str, Any]]
) -> None:
    """aiortc closes its peer connection (DTLS close_notify) and the WebSocket stays open: the
    media is gone for good, so after a grace period the call fails instead of living on with
    no audio."""
    app, url = application
    caller = await dial(url)
    voice = caller.voice
    try:
        await talking(app, caller)
        await audio_of(app).close()
        transport = media_of(caller)
        await wait_until(lambda: transport.media.peer_closed, timeout=5)
        grace = PEER_CLOSE_GRACE_S + 5
        assert await asyncio.wait_for(voice.wait_ended(), grace) == EndReason("failed", "1011")
        await asyncio.wait_for(app.closed.wait(), 5)
        assert app.close_info is not None and app.close_info.code == 1011
        assert "closed the WebRTC media" in app.close_info.reason
        await talker_stopped(caller)
    finally:
        await caller.stop()
    assert loop_errors == []
