"""The application-role SDK: accept calls from a voice peer; one call is one `Call` object.

```python
app = Application()

@app.call
async def agent(call: Call) -> None:
    async for frame in call.audio():
        await call.send_audio(frame)
```

The voice peer (babelforce Cloud, `callbridge call`) connects, offers codecs in
``session.initialize``; the application picks one (default: the first offered L16), answers, and
only then is the handler started and audio allowed both ways. When the handler returns while the
call is still up, the call is hung up ("application finished"); when it raises, the error is logged
and the call is hung up ("application error").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from aiohttp import web

from callbridge.media.resample import Resampler
from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.answering import AnsweringRunner
from callbridge.rtvbp.audio import InboundFrames, OutboundAudio, l16_frame_bytes
from callbridge.rtvbp.audio_channel import AudioSink
from callbridge.rtvbp.auth import AuthContext, Authenticator, OriginPolicy
from callbridge.rtvbp.catalog import Role
from callbridge.rtvbp.codecs import CodecChooser, first_l16, narrowband_only
from callbridge.rtvbp.demo_profile import DEMO_PROFILE, serve_demo
from callbridge.rtvbp.errors import SessionClosedError
from callbridge.rtvbp.picows_listener import Upgrade, UpgradeRequest, check_request
from callbridge.rtvbp.profiles import SERVED_PROFILES
from callbridge.rtvbp.session import RtvbpSession
from callbridge.rtvbp.transport_base import Transport
from callbridge.rtvbp.webrtc import WebRtcOptions, answer_profile
from callbridge.rtvbp.webrtc_transport import WebRtcTransport
from callbridge.rtvbp.websocket import accept

logger = logging.getLogger(__name__)

CallHandler = Callable[["Call"], Awaitable[None]]
T = TypeVar("T")

HANDLER_GRACE_SECONDS = 2.0
"""How long a handler may keep running after its call ended before it is cancelled."""


class Call:
    """One call: its identity, its audio both ways, and every application-side operation."""

    def __init__(
        self,
        session: RtvbpSession,
        request: bf.SessionInitializeRequest,
        codec: bf.AudioCodec,
        *,
        auth: AuthContext | None,
        remote: str | None,
        inbound_capacity_frames: int,
    ) -> None:
        self.session = session
        self.info: bf.CallInfo = request.call
        self.application_id: str = request.application.id
        self.metadata: dict[str, Any] | None = request.metadata
        self.offered_codecs: list[bf.AudioCodec] = list(request.audio_codec_offerings)
        self.codec = codec
        self.sample_rate = int(codec.sample_rate)
        self.frame_bytes = l16_frame_bytes(self.sample_rate, int(codec.channels))
        self.auth = auth
        """Who authenticated the voice peer (None without authentication)."""
        self.remote = remote
        self.hangup_reason: str | None = None
        """Why the call ended, once it did (from call.hangup / session.terminate, or ours)."""
        self._inbound = InboundFrames(inbound_capacity_frames)
        self._outbound = OutboundAudio(session, self.sample_rate, self.frame_bytes)
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._dtmf: asyncio.Queue[bf.DtmfEvent | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ended = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Call {self.info.id} from {self.info.from_} to {self.info.to} {self.codec.id}>"

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ended(self) -> str | None:
        """Wait until the call is over; returns the hang-up reason when one is known."""
        await self._ended.wait()
        return self.hangup_reason

    def spawn(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run `coroutine` alongside the handler; it is cancelled when the call ends.

        A failure is logged once (at info; SessionClosedError, normal when the caller hangs up
        meanwhile, at debug) and stays readable from the returned task.
        """
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._spawned_task_done)
        return task

    def _spawned_task_done(self, task: asyncio.Task[Any]) -> None:
        """Collect a spawned task's outcome, so no failure goes unreported or reported twice."""
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, SessionClosedError):
            logger.debug("call %s: spawned task ended with the session: %s", self.info.id, error)
        elif error is not None:
            logger.info("call %s: spawned task failed: %r", self.info.id, error, exc_info=error)

    # -- audio ------------------------------------------------------------------------------------

    def audio(self, *, sample_rate: int | None = None) -> AsyncIterator[bytes]:
        """The caller's audio as 20 ms L16 frames, ending when the call ends.

        With `sample_rate` (e.g. 16000 or 24000 for speech models) frames are converted by a
        stateful anti-aliased resampler. Frames not consumed in time are dropped, oldest first
        (`audio_frames_dropped`).
        """
        resampler = None
        if sample_rate is not None and sample_rate != self.sample_rate:
            resampler = Resampler(self.sample_rate, sample_rate)
        return self._inbound.iterate(resampler)

    def on_audio(self, callback: AudioSink | None) -> None:
        """Hand each caller frame (20 ms L16 at the call's rate) to `callback` as it arrives,
        instead of to `audio()`; None goes back to `audio()`.

        The callback runs synchronously where the frame is read (on the picows listener: in
        the socket's own callback, with no task in between), so it must not block; pair it with
        `send_audio_nowait`. Its exceptions are logged once and counted
        (`session.stats.audio_sink_errors`).
        """
        self.session.on_audio(self._inbound.put if callback is None else callback)

    @property
    def audio_frames_dropped(self) -> int:
        return self._inbound.dropped

    async def send_audio(
        self, pcm: bytes, *, sample_rate: int | None = None, realtime: bool = False
    ) -> None:
        """Send audio of any length (L16 little-endian mono) to the caller.

        It is cut into exact 20 ms frames; a trailing partial frame waits for more audio or
        `flush_audio()`. `sample_rate` converts from the model's rate. By default frames leave
        at once and the voice peer buffers them; `realtime=True` paces them as they play, so
        `clear_audio()` can also stop audio that has not been sent yet.
        """
        if len(pcm) == self.frame_bytes and sample_rate is None and not realtime:
            await self._outbound.send_frame(pcm)  # the relay hot path: one exact frame
        else:
            await self._outbound.send(pcm, sample_rate=sample_rate, realtime=realtime)

    def send_audio_nowait(self, frame: bytes) -> bool:
        """Send one exact frame (`frame_bytes`) to the caller now, without waiting: for
        synchronous code such as an `on_audio` callback. Returns False when the frame was
        dropped because the voice peer reads slower than we send
        (`session.stats.audio_frames_out_dropped`)."""
        return self._outbound.send_frame_nowait(frame)

    async def flush_audio(self) -> None:
        """Send the trailing partial frame, padded with silence."""
        await self._outbound.flush()

    async def clear_audio(self) -> int:
        """Barge-in: drop audio not sent yet and ask the voice peer to discard its unplayed buffer.

        Returns the bytes the voice peer discarded (what the caller will now not hear).
        """
        self._outbound.clear()
        result = await self.session.request("audio.buffer.clear", bf.AudioBufferClearRequest())
        return int(result.len)

    # -- events from the voice peer ---------------------------------------------------------------

    async def dtmf(self) -> AsyncIterator[bf.DtmfEvent]:
        """Digits pressed by the caller (reported on key release), ending when the call ends."""
        while (event := await self._dtmf.get()) is not None:
            yield event

    async def events(self) -> AsyncIterator[Any]:
        """Every event from the voice peer (SessionUpdatedEvent, DtmfEvent, CallHangupEvent,
        AudioInfoEvent), in order, ending when the call ends."""
        while (event := await self._events.get()) is not None:
            yield event

    # -- operations on the voice peer -------------------------------------------------------------

    async def hangup(self, reason: str = "normal") -> None:
        """Hang up the phone call; the session ends."""
        await self.session.request(
            "call.hangup", bf.CallHangupRequest(reason=reason), terminal_ok=True
        )
        if self.hangup_reason is None:
            self.hangup_reason = reason

    async def move(
        self, application_id: str | None = None, reason: str | None = None
    ) -> str | None:
        """Leave this application and continue the call flow (at `application_id`, or the next
        step); returns the next application id when the voice peer says it."""
        result = await self.session.request(
            "application.move",
            bf.ApplicationMoveRequest(reason=reason, application_id=application_id),
            terminal_ok=True,
        )
        return None if result is None else result.next_application_id

    async def start_recording(self, tags: Sequence[str] | None = None) -> str:
        """Start recording the call; returns the recording id."""
        result = await self.session.request(
            "recording.start", bf.RecordingStartRequest(tags=list(tags) if tags else None)
        )
        return str(result.id)

    async def stop_recording(self, recording_id: str) -> None:
        await self.session.request("recording.stop", bf.RecordingStopRequest(id=recording_id))

    async def get_variables(self, *keys: str) -> dict[str, Any]:
        """Session variables of the IVR; no keys means all of them."""
        result: dict[str, Any] = await self.session.request(
            "session.get", bf.SessionGetRequest(keys=list(keys))
        )
        return result

    async def set_variables(self, values: dict[str, Any]) -> None:
        await self.session.request("session.set", bf.SessionSetRequest(data=values))

    async def ping(self) -> int:
        """Round-trip time to the voice peer in ms (application-level ping)."""
        return await self.session.ping()

    # -- events to the voice peer -----------------------------------------------------------------

    async def speech_started(self, origin: str = "sender") -> None:
        """Signal barge-in: speech started (usually followed by `clear_audio()`)."""
        await self.session.notify("audio.speech.started", bf.AudioSpeechStartedEvent(origin=origin))

    async def tool_call(self, name: str) -> None:
        """Tell the voice console the agent called a tool (the name only: no arguments)."""
        await self.session.notify("agent.tool.call", bf.AgentToolCallEvent(name=name))

    async def input_transcript(self, text: str) -> None:
        """The caller's complete, finalized utterance."""
        await self.session.notify("input.transcript", bf.InputTranscriptEvent(delta=text))

    async def output_transcript_delta(self, text: str) -> None:
        """A piece of what the agent is saying."""
        await self.session.notify(
            "output.transcript.delta", bf.OutputTranscriptDeltaEvent(delta=text)
        )

    async def output_transcript_done(self, text: str | None = None) -> None:
        """End of the agent's utterance; `text` (even "") replaces the accumulated deltas."""
        await self.session.notify("output.transcript.done", bf.OutputTranscriptDoneEvent(text=text))

    # -- plumbing used by Application -------------------------------------------------------------

    def _deliver_event(self, event: Any) -> None:
        self._events.put_nowait(event)
        if isinstance(event, bf.DtmfEvent):
            self._dtmf.put_nowait(event)
        elif isinstance(event, bf.CallHangupEvent) and self.hangup_reason is None:
            self.hangup_reason = event.reason or "hangup"

    def _end(self, reason: str | None) -> None:
        if self._ended.is_set():
            return
        if self.hangup_reason is None:
            self.hangup_reason = reason
        self._inbound.close()
        self._events.put_nowait(None)
        self._dtmf.put_nowait(None)
        self._ended.set()

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class Application:
    """An RTVBP application: a call handler plus the policy for accepting calls.

    Serve it with ``callbridge serve module:app``, or mount it into an aiohttp app with
    ``aiohttp_app.router.add_get("/rtvbp", app.websocket_handler)``.
    """

    def __init__(
        self,
        handler: CallHandler | None = None,
        *,
        choose_codec: CodecChooser = first_l16,
        request_timeout_s: float = 5.0,
        inbound_capacity_frames: int = 250,
        authenticator: Authenticator | None = None,
        origins: OriginPolicy | None = None,
        heartbeat_s: float | None = 20.0,
        max_message_bytes: int = 1 << 20,
        webrtc: WebRtcOptions | None = None,
    ) -> None:
        self.handler = handler
        self.choose_codec = choose_codec
        self.request_timeout_s = request_timeout_s
        self.inbound_capacity_frames = inbound_capacity_frames
        self.authenticator = authenticator
        self.origins = origins
        self.heartbeat_s = heartbeat_s
        self.max_message_bytes = max_message_bytes
        self.webrtc = WebRtcOptions() if webrtc is None else webrtc
        """Media address and timeouts of calls that choose ``rtvbp.webrtc.v1``."""
        self.active_calls: set[Call] = set()

    def call(self, handler: CallHandler) -> CallHandler:
        """Decorator: `handler(call)` runs once per call."""
        self.handler = handler
        return handler

    async def websocket_handler(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler for the RTVBP ingress path: authenticate, negotiate, run the call."""
        accepted = await accept(
            request,
            supported_profiles=SERVED_PROFILES,
            authenticator=self.authenticator,
            origins=self.origins,
            heartbeat_s=self.heartbeat_s,
            max_message_bytes=self.max_message_bytes,
        )
        await self.serve_connection(
            accepted.transport,
            profile_token=accepted.profile.token,
            auth=accepted.auth,
            remote=accepted.remote,
        )
        return accepted.response

    async def decide_upgrade(self, request: UpgradeRequest) -> Upgrade:
        """The picows listener's router for this application: the checks `websocket_handler`
        runs, then the call (refusals raise `UpgradeRefused`)."""
        profile, auth = await check_request(
            request, authenticator=self.authenticator, origins=self.origins
        )

        async def serve(transport: Transport) -> None:
            await self.serve_connection(
                transport, profile_token=profile.token, auth=auth, remote=request.remote
            )

        return Upgrade(
            profile,
            auth,
            serve,
            heartbeat_s=self.heartbeat_s,
            max_message_bytes=self.max_message_bytes,
        )

    async def serve_connection(
        self,
        transport: Transport,
        *,
        profile_token: str | None,
        auth: AuthContext | None,
        remote: str | None,
    ) -> None:
        """Serve one upgraded connection (either listener): a call, the demo profile's echo, or
        a call whose audio moves to WebRTC once its offer is answered."""
        if profile_token == DEMO_PROFILE:
            await serve_demo(transport, request_timeout_s=self.request_timeout_s)
            return
        answered = await answer_profile(transport, profile_token, self.webrtc)
        if answered is not None:
            await self.run(answered, auth=auth, remote=remote)

    async def run(
        self, transport: Transport, *, auth: AuthContext | None = None, remote: str | None = None
    ) -> None:
        """Run one RTVBP session (application role) over `transport` until it closes."""
        if self.handler is None:
            raise RuntimeError("Application has no call handler: decorate one with @app.call")
        session = RtvbpSession(
            Role.APPLICATION, bf.CATALOG, transport, request_timeout_s=self.request_timeout_s
        )
        call = _ApplicationCall(self, session, auth, remote, isinstance(transport, WebRtcTransport))
        info = await AnsweringRunner(session, call).serve()
        await call.finish("closed" if info.orderly else f"connection lost ({info.code})")


class _ApplicationCall:
    """The SDK's answering hooks: a `Call` for the handler, started once answered."""

    def __init__(
        self,
        application: Application,
        session: RtvbpSession,
        auth: AuthContext | None,
        remote: str | None,
        webrtc: bool,
    ) -> None:
        self.application = application
        self.session = session
        self.auth = auth
        self.remote = remote
        self.call: Call | None = None
        self.handler_task: asyncio.Task[None] | None = None
        self.webrtc = webrtc

    def choose_codec(self, offer: bf.SessionInitializeRequest) -> CodecChooser:
        chooser = self.application.choose_codec
        return narrowband_only(chooser) if self.webrtc else chooser

    def prepare(self, offer: bf.SessionInitializeRequest, codec: bf.AudioCodec) -> AudioSink:
        call = Call(
            self.session,
            offer,
            codec,
            auth=self.auth,
            remote=self.remote,
            inbound_capacity_frames=self.application.inbound_capacity_frames,
        )
        self.call = call
        return call._inbound.put

    def answered(self, offer: bf.SessionInitializeRequest, codec: bf.AudioCodec) -> None:
        call = self.call
        assert call is not None
        logger.info(
            "call %s started: from %s to %s, codec %s",
            call.info.id,
            call.info.from_,
            call.info.to,
            codec.id,
        )
        self.application.active_calls.add(call)
        self.handler_task = asyncio.create_task(
            self._run_handler(call), name=f"call-{call.info.id}"
        )

    def abandoned(self) -> None:
        """Nothing started yet: `finish` ends the call when the session closes."""

    def terminated(self, reason: str | None) -> None:
        if self.call is not None:
            self.call._end(reason)

    def event(self, name: str, data: Any) -> None:
        if self.call is not None:
            self.call._deliver_event(data)

    async def _run_handler(self, call: Call) -> None:
        handler = self.application.handler
        assert handler is not None
        reason = "application finished"
        try:
            await handler(call)
        except asyncio.CancelledError:
            raise
        except SessionClosedError:
            return
        except Exception:
            logger.exception("call %s: handler failed", call.info.id)
            reason = "application error"
        if not call.ended and not self.session.closed:
            try:
                await call.hangup(reason)
            except Exception as error:
                logger.debug("call %s: hang-up after handler failed: %r", call.info.id, error)

    async def finish(self, reason: str) -> None:
        call = self.call
        if call is None:
            return
        call._end(reason)
        self.application.active_calls.discard(call)
        task = self.handler_task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=HANDLER_GRACE_SECONDS)
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await call._cancel_tasks()
        stats = self.session.stats
        logger.info(
            "call %s ended (%s): %d frames in, %d out",
            call.info.id,
            call.hangup_reason,
            stats.audio_frames_in,
            stats.audio_frames_out,
        )
