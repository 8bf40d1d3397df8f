"""The voice-role SDK: dial an RTVBP application and be the phone side of the call.

```python
async with await VoiceCall.dial("ws://127.0.0.1:9100/rtvbp") as call:
    await call.send_audio(caller_pcm)       # what the caller says
    frame = call.read_frame()              # what the application says, one 20 ms frame per tick
    await call.send_dtmf("1")
    await call.hangup()
```

The application's audio usually arrives faster than real time; it waits in a playout buffer
that whoever plays it reads at real time (`read_frame()` from a clock, or `playout_frames()`),
and that ``audio.buffer.clear`` really clears, answering with the bytes discarded. Every voice-role
operation is answered: hang-up and move end the call (and say why in `end_reason`), session
variables live in `variables`, recording goes to a pluggable `Recorder` (by default a stereo WAV
of both directions, `WavCallRecorder`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

from callbridge.media.playout import PlayoutBuffer
from callbridge.media.telephone_event import DIGITS
from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.audio import OutboundAudio, l16_frame_bytes
from callbridge.rtvbp.catalog import Role
from callbridge.rtvbp.errors import INTERNAL, RemoteError, RtvbpError
from callbridge.rtvbp.session import IncomingRequest, RtvbpSession, now_ms
from callbridge.rtvbp.transport_base import Transport
from callbridge.rtvbp.voice_recorder import WavCallRecorder
from callbridge.rtvbp.webrtc import WEBRTC_PROFILE, WebRtcError, WebRtcOptions, send_offer
from callbridge.rtvbp.websocket import ConnectError, connect

logger = logging.getLogger(__name__)

APPLICATION_EVENTS = bf.CATALOG.events_emitted_by(Role.APPLICATION)
"""The events an application emits (babelforce.v1): what a voice peer receives."""

EventHook = Callable[[str, Any], None]
"""Receives (event name, decoded data) for every event from the application, in order."""


class ProtocolViolationError(RtvbpError):
    """The application broke the protocol (e.g. chose a codec that was not offered)."""


class Recorder(Protocol):
    """Where a voice peer records calls when the application asks (recording.start/stop)."""

    async def start(self, tags: Sequence[str] | None) -> str:
        """Start a recording and return its id."""
        ...

    async def stop(self, recording_id: str) -> None:
        """Stop it; raise KeyError for an id that is not recording."""
        ...


@dataclass(frozen=True, slots=True)
class EndReason:
    """Why a voice call ended: who ended it and how."""

    kind: str
    """"hangup" (we hung up), "application-hangup", "application-move", "closed" or "failed"."""
    detail: str | None = None
    """The reason text, or the next application id for a move."""


def new_call_info(from_number: str = "+4910002000", to_number: str = "+4910003000") -> bf.CallInfo:
    """Call identity with fresh random ids, for simulators and tests."""
    return bf.CallInfo(
        id=uuid.uuid4().hex, session_id=uuid.uuid4().hex, from_=from_number, to=to_number
    )


class VoiceCall:
    """The voice (phone) side of one RTVBP session."""

    def __init__(
        self,
        session: RtvbpSession,
        call: bf.CallInfo,
        *,
        recorder: Recorder | None = None,
        playout_capacity_bytes: int = 1 << 20,
        variables: dict[str, Any] | None = None,
        event_hook: EventHook | None = None,
    ) -> None:
        self.session = session
        self.call = call
        self.recorder: Recorder = WavCallRecorder() if recorder is None else recorder
        """Where the application's recordings go (default: stereo WAV files of the call)."""
        self._wav = self.recorder if isinstance(self.recorder, WavCallRecorder) else None
        self.variables: dict[str, Any] = {} if variables is None else variables
        """IVR session variables the application reads and writes (session.get/set); a dict
        passed in is shared, not copied (a media session's variables)."""
        self.event_hook = event_hook
        """When set, events from the application go to it instead of `events()`."""
        self.codec: bf.AudioCodec | None = None
        self.end_reason: EndReason | None = None
        self.playout: PlayoutBuffer | None = None
        self._playout_capacity = playout_capacity_bytes
        self._outbound: OutboundAudio | None = None
        self._dtmf_seq = 0
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._read_bytes = 0
        self._written_bytes = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._register_handlers()

    # -- dialing ----------------------------------------------------------------------------------

    @classmethod
    async def dial(
        cls,
        url: str,
        *,
        call: bf.CallInfo | None = None,
        application_id: str = "callbridge",
        metadata: dict[str, Any] | None = None,
        codecs: Sequence[bf.AudioCodec] = (bf.AudioCodec.l16(8000),),
        bearer_token: str | None = None,
        headers: Mapping[str, str] | None = None,
        profiles: Sequence[str] | None = ("rtvbp.v1",),
        recorder: Recorder | None = None,
        request_timeout_s: float = 5.0,
        connect_timeout_s: float = 10.0,
        audio_info_interval_s: float | None = 5.0,
        playout_capacity_bytes: int = 1 << 20,
        variables: dict[str, Any] | None = None,
        event_hook: EventHook | None = None,
        webrtc: WebRtcOptions | None = None,
    ) -> VoiceCall:
        """Connect, initialize (offering `codecs`), announce ``session.updated``; audio may flow.

        When the application chose ``rtvbp.webrtc.v1`` (offer it in `profiles`), the audio moves
        to WebRTC first: we offer (`webrtc` sets our media address and timeouts), and the call
        starts once DTLS has keyed SRTP; only L16/8000 is used then.

        `variables`: a dict to share as the session variables (default: a new one).
        `event_hook`: called with (name, data) for each application event, instead of
        queueing it for `events()` (for callers that do not iterate, e.g. the media engine).

        Raises `ConnectError` (unreachable, HTTP 401/400), `RemoteError` (the application refused
        initialize), `RequestTimeoutError`, or `ProtocolViolationError` (bad codec choice).
        """
        connected = await connect(
            url,
            profiles=profiles,
            headers=headers,
            bearer_token=bearer_token,
            connect_timeout_s=connect_timeout_s,
        )
        transport: Transport = connected.transport
        if connected.profile.token == WEBRTC_PROFILE:
            try:
                transport = await send_offer(transport, webrtc or WebRtcOptions())
            except WebRtcError as error:
                raise ConnectError(f"WebRTC negotiation failed: {error.message}") from None
        session = RtvbpSession(
            Role.VOICE, bf.CATALOG, transport, request_timeout_s=request_timeout_s
        )
        voice = cls(
            session,
            call or new_call_info(),
            recorder=recorder,
            playout_capacity_bytes=playout_capacity_bytes,
            variables=variables,
            event_hook=event_hook,
        )
        session.start()
        try:
            await voice._initialize(application_id, metadata, codecs)
        except BaseException:
            await session.close()
            raise
        voice._tasks.append(asyncio.create_task(voice._watch_close()))
        if audio_info_interval_s:
            voice._tasks.append(
                asyncio.create_task(voice._report_audio_info(audio_info_interval_s))
            )
        return voice

    async def _initialize(
        self,
        application_id: str,
        metadata: dict[str, Any] | None,
        codecs: Sequence[bf.AudioCodec],
    ) -> None:
        request = bf.SessionInitializeRequest(
            application=bf.AppInfo(id=application_id),
            call=self.call,
            audio_codec_offerings=list(codecs),
            metadata=metadata,
        )

        def open_audio(result: bf.SessionInitializeResponse) -> None:
            # On the reader, before the application's first audio frame is read.
            chosen = result.audio_codec
            if chosen is None or chosen not in codecs:
                return
            frame_bytes = l16_frame_bytes(int(chosen.sample_rate), int(chosen.channels))
            self.codec = chosen
            self.playout = PlayoutBuffer(frame_bytes, self._playout_capacity)
            self._outbound = OutboundAudio(self.session, int(chosen.sample_rate), frame_bytes)
            self.session.open_audio(frame_bytes)
            self.session.on_audio(self.playout.write)
            if self._wav is not None:
                self._wav.open(self.call.id, int(chosen.sample_rate))

        result: bf.SessionInitializeResponse = await self.session.request(
            "session.initialize", request, on_result=open_audio
        )
        if self.codec is None:
            await self.session.close(1002, "codec not offered")
            chosen = result.audio_codec
            offered = ", ".join(codec.id for codec in codecs)
            raise ProtocolViolationError(
                f"application chose {chosen.id if chosen else 'no codec'}; offered {offered}"
            )
        await self.session.notify("session.updated", bf.SessionUpdatedEvent(audio_codec=self.codec))

    async def __aenter__(self) -> VoiceCall:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # -- properties -------------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return int(self._require_codec().sample_rate)

    @property
    def frame_bytes(self) -> int:
        return self.session.audio_frame_bytes

    @property
    def ended(self) -> bool:
        return self.session.closed

    # -- audio ------------------------------------------------------------------------------------

    async def send_audio(self, pcm: bytes, *, sample_rate: int | None = None) -> None:
        """Send caller audio (L16 little-endian mono, any length; exact frames leave)."""
        outbound = self._require_outbound()
        sent = await outbound.send(pcm, sample_rate=sample_rate)
        self._written_bytes += sent * self.frame_bytes
        if self._wav is not None:
            self._wav.caller_audio(pcm, sample_rate)

    def read_frame(self) -> bytes | None:
        """The application's next 20 ms frame to play, or None when nothing is buffered.

        Call it once per 20 ms from a clock: that is what plays the audio at real time.
        """
        playout = self.playout
        if playout is None:
            return None
        frame = playout.read_frame()
        if frame is not None:
            self._read_bytes += len(frame)
            if self._wav is not None:
                self._wav.application_audio(frame)
        return frame

    async def playout_frames(self) -> AsyncIterator[bytes]:
        """Play the application's audio at real time: one frame (or silence) every 20 ms."""
        silence = bytes(self.frame_bytes)
        next_at = time.monotonic()
        while not self.session.closed:
            frame = self.read_frame()
            yield silence if frame is None else frame
            next_at += 0.020
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:
                next_at = time.monotonic()

    # -- call control -----------------------------------------------------------------------------

    async def send_dtmf(self, digit: str, *, hold_ms: int = 100) -> bf.DtmfEvent:
        """Press and release `digit`; the event is sent on release, as telephony reports it."""
        digit = digit.upper()
        if len(digit) != 1 or digit not in DIGITS:
            raise ValueError(f"DTMF digit must be one of 0-9 * # A-D, got {digit!r}")
        pressed_at = now_ms()
        await asyncio.sleep(hold_ms / 1000)
        event = bf.DtmfEvent(
            seq=self._dtmf_seq, pressed_at=pressed_at, released_at=now_ms(), digit=digit
        )
        self._dtmf_seq += 1
        await self.session.notify("dtmf", event)
        return event

    async def hangup(self, reason: str = "hangup") -> None:
        """The caller hung up: tell the application (call.hangup event, then session.terminate)."""
        if self.session.closed:
            return
        self._set_end("hangup", reason)
        await self.session.notify("call.hangup", bf.CallHangupEvent(reason=reason))
        await self.session.request(
            "session.terminate", bf.SessionTerminateRequest(reason=reason), terminal_ok=True
        )
        await self.close()

    async def close(self) -> None:
        """Close the session without the hang-up exchange (the application sees the socket end)."""
        self._set_end("closed", None)
        if self._wav is not None:
            self._wav.close()
        try:
            await self.session.close()
        finally:  # also when the close is cancelled (a caller's timeout): no task outlives it
            current = asyncio.current_task()
            tasks = [task for task in self._tasks if task is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_ended(self) -> EndReason:
        """Wait until the session is over and say why."""
        info = await self.session.wait_closed()
        self._set_end(
            "closed" if info.orderly else "failed", None if info.orderly else str(info.code)
        )
        assert self.end_reason is not None
        return self.end_reason

    async def events(self) -> AsyncIterator[Any]:
        """Events from the application (speech started, tool calls, transcripts), in order,
        ending when the call ends."""
        while (event := await self._events.get()) is not None:
            yield event

    # -- handlers for the application's requests --------------------------------------------------

    def _register_handlers(self) -> None:
        session = self.session
        session.handle("call.hangup", self._on_hangup)
        session.handle("application.move", self._on_move)
        session.handle("audio.buffer.clear", self._on_clear)
        session.handle("session.get", self._on_get)
        session.handle("session.set", self._on_set)
        session.handle("recording.start", self._on_recording_start)
        session.handle("recording.stop", self._on_recording_stop)
        for name in APPLICATION_EVENTS:
            session.on_event(name, self._event_receiver(name))

    def _gate(self) -> None:
        if self.codec is None:
            raise RemoteError(INTERNAL, "session not initialized")

    async def _on_hangup(self, request: IncomingRequest) -> bf.CallHangupResponse:
        self._gate()
        self._set_end("application-hangup", request.params.reason)
        return bf.CallHangupResponse()

    async def _on_move(self, request: IncomingRequest) -> bf.ApplicationMoveResponse:
        self._gate()
        params: bf.ApplicationMoveRequest = request.params
        self._set_end("application-move", params.application_id or params.reason)
        return bf.ApplicationMoveResponse(next_application_id=params.application_id)

    async def _on_clear(self, request: IncomingRequest) -> bf.AudioBufferClearResponse:
        self._gate()
        assert self.playout is not None
        return bf.AudioBufferClearResponse(len=self.playout.clear())

    async def _on_get(self, request: IncomingRequest) -> dict[str, Any]:
        self._gate()
        keys: list[str] = request.params.keys
        if not keys:
            return dict(self.variables)
        return {key: self.variables[key] for key in keys if key in self.variables}

    async def _on_set(self, request: IncomingRequest) -> bf.SessionSetResponse:
        self._gate()
        self.variables.update(request.params.data)
        return bf.SessionSetResponse()

    async def _on_recording_start(self, request: IncomingRequest) -> bf.RecordingStartResponse:
        self._gate()
        try:
            recording_id = await self.recorder.start(request.params.tags)
        except OSError as error:
            raise RemoteError(INTERNAL, f"cannot record: {error}") from None
        return bf.RecordingStartResponse(id=recording_id)

    async def _on_recording_stop(self, request: IncomingRequest) -> bf.RecordingStopResponse:
        self._gate()
        recording_id: str = request.params.id
        try:
            await self.recorder.stop(recording_id)
        except KeyError:
            raise RemoteError(INTERNAL, f"recording {recording_id!r} is not active") from None
        return bf.RecordingStopResponse()

    def _event_receiver(self, name: str) -> Callable[[Any], Awaitable[None]]:
        async def receive(data: Any) -> None:
            hook = self.event_hook
            if hook is None:
                self._events.put_nowait(data)
            else:
                hook(name, data)

        return receive

    # -- internals --------------------------------------------------------------------------------

    def _set_end(self, kind: str, detail: str | None) -> None:
        if self.end_reason is None:
            self.end_reason = EndReason(kind, detail)

    def _require_codec(self) -> bf.AudioCodec:
        if self.codec is None:
            raise RtvbpError("the call is not initialized")
        return self.codec

    def _require_outbound(self) -> OutboundAudio:
        if self._outbound is None:
            raise RtvbpError("the call is not initialized")
        return self._outbound

    async def _watch_close(self) -> None:
        await self.wait_ended()
        if self._wav is not None:
            self._wav.close()
        self._events.put_nowait(None)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()  # the audio.info reporter: nothing to report any more

    async def _report_audio_info(self, interval_s: float) -> None:
        """Emit audio.info every `interval_s`: bytes played out (read) and sent (write)."""
        last_read = last_written = 0
        last_at = time.monotonic()
        while not self.session.closed:
            await asyncio.sleep(interval_s)
            now = time.monotonic()
            elapsed = max(now - last_at, 1e-9)
            read, written = self._read_bytes, self._written_bytes
            event = bf.AudioInfoEvent(
                read=_audio_item(read - last_read, elapsed, read),
                write=_audio_item(written - last_written, elapsed, written),
            )
            last_read, last_written, last_at = read, written, now
            try:
                await self.session.notify("audio.info", event)
            except RtvbpError:
                return


def _audio_item(delta: int, seconds: float, total: int) -> bf.AudioInfoItem:
    return bf.AudioInfoItem(bytes=delta, bytes_per_second=delta / seconds, bytes_total=total)
