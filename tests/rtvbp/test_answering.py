"""The shared answering runner over a memory pair, with a voice-role session as the caller."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.answering import VOICE_EVENTS, AnsweringRunner, AnswerState
from callbridge.rtvbp.audio_channel import AudioSink
from callbridge.rtvbp.catalog import Role
from callbridge.rtvbp.codecs import CodecChooser, prefer_sample_rate
from callbridge.rtvbp.errors import BAD_REQUEST, RemoteError
from callbridge.rtvbp.memory import MemoryTransport
from callbridge.rtvbp.session import RtvbpSession
from tests.conftest import wait_until

OFFERS = [bf.AudioCodec.l16(8000), bf.AudioCodec.l16(16000)]


class RecordingHooks:
    """Records every step; `refuse` and `fail_answered` make a step fail."""

    def __init__(self) -> None:
        self.steps: list[Any] = []
        self.frames: list[bytes] = []
        self.refuse = False
        self.fail_answered = False

    def choose_codec(self, offer: bf.SessionInitializeRequest) -> CodecChooser:
        self.steps.append("choose")
        return prefer_sample_rate(16000)

    def prepare(self, offer: bf.SessionInitializeRequest, codec: bf.AudioCodec) -> AudioSink:
        if self.refuse:
            raise RemoteError(500, "no room")
        self.steps.append(("prepare", codec.id))
        return self.frames.append

    def answered(self, offer: bf.SessionInitializeRequest, codec: bf.AudioCodec) -> None:
        self.steps.append("answered")
        if self.fail_answered:
            raise RuntimeError("gone meanwhile")

    def abandoned(self) -> None:
        self.steps.append("abandoned")

    def terminated(self, reason: str | None) -> None:
        self.steps.append(("terminated", reason))

    def event(self, name: str, data: Any) -> None:
        self.steps.append(("event", name))


@pytest.fixture
async def call() -> AsyncIterator[tuple[AnsweringRunner, RecordingHooks, RtvbpSession]]:
    local, remote = MemoryTransport.pair()
    hooks = RecordingHooks()
    runner = AnsweringRunner(RtvbpSession(Role.APPLICATION, bf.CATALOG, local), hooks)
    served = asyncio.create_task(runner.serve())
    async with RtvbpSession(Role.VOICE, bf.CATALOG, remote) as voice:
        yield runner, hooks, voice
    await asyncio.wait_for(served, 2.0)


def offer() -> bf.SessionInitializeRequest:
    return bf.SessionInitializeRequest(
        application=bf.AppInfo(id="app"),
        call=bf.CallInfo(id="c", session_id="s", from_="+1", to="+2"),
        audio_codec_offerings=OFFERS,
        metadata=None,
    )


async def test_answer_opens_audio_first_then_follows_the_voice_peer(
    call: tuple[AnsweringRunner, RecordingHooks, RtvbpSession],
) -> None:
    runner, hooks, voice = call
    assert VOICE_EVENTS == ("session.updated", "dtmf", "call.hangup", "audio.info")
    await voice.notify("call.hangup", bf.CallHangupEvent(reason="early"))  # before: ignored

    def open_audio(result: bf.SessionInitializeResponse) -> None:
        voice.open_audio(640)

    result = await voice.request("session.initialize", offer(), on_result=open_audio)
    assert result.audio_codec == OFFERS[1]
    await voice.send_audio(bytes(640))  # right after the answer: already routed to the sink
    await voice.notify("dtmf", bf.DtmfEvent(seq=0, pressed_at=1, released_at=2, digit="1"))
    await wait_until(lambda: ("event", "dtmf") in hooks.steps)
    assert hooks.frames == [bytes(640)] and runner.state is AnswerState.ANSWERED
    with pytest.raises(RemoteError) as again:
        await voice.request("session.initialize", offer())
    assert (again.value.code, again.value.message) == (BAD_REQUEST, "session already initialized")
    await voice.request(
        "session.terminate", bf.SessionTerminateRequest(reason="bye"), terminal_ok=True
    )
    assert (await voice.wait_closed()).orderly
    assert hooks.steps == [
        "choose",
        ("prepare", "L16/16000/1"),
        "answered",
        ("event", "dtmf"),
        ("terminated", "bye"),
    ]


async def test_a_refused_call_is_answered_with_the_error_and_nothing_to_undo(
    call: tuple[AnsweringRunner, RecordingHooks, RtvbpSession],
) -> None:
    runner, hooks, voice = call
    hooks.refuse = True
    with pytest.raises(RemoteError, match="no room"):
        await voice.request("session.initialize", offer())
    assert hooks.steps == ["choose"] and runner.state is AnswerState.WAITING


async def test_a_failure_after_the_answer_abandons_the_call(
    call: tuple[AnsweringRunner, RecordingHooks, RtvbpSession],
) -> None:
    runner, hooks, voice = call
    hooks.fail_answered = True
    await voice.request("session.initialize", offer())
    await wait_until(lambda: "abandoned" in hooks.steps)
    assert runner.state is AnswerState.WAITING
    assert runner.session.stats.audio_frames_in == 0
    voice.open_audio(640)
    await voice.send_audio(bytes(640))
    await wait_until(lambda: runner.session.stats.audio_frames_in == 1)
    assert hooks.frames == []  # the sink was withdrawn
