"""Voice activity detection on a session's endpoints (`vad.start` / `vad.stop`).

Each monitored endpoint gets an audio tap at 16 kHz (its decoded 20 ms frames, whatever its
codec; passthrough is unaffected) that feeds a `VoiceActivity` over the configured detector. The
events go to the session's controller:

- `vad.speech_started {endpoint_id}` once per utterance;
- `vad.silence {endpoint_id, silence_duration_ms}` every `silence_interval_ms` of silence that
  follows speech (forced with duration 0 when the endpoint's audio stops in mid-speech);
- `vad.error {endpoint_id, error}` when the detector cannot be created or fails; the endpoint is
  then no longer monitored.

The monitors follow their endpoints as a `SessionObserver`: removal and the end of the session
stop them; an endpoint transferred to another session keeps its monitor, state included (it is
picked up in the new session as soon as the transfer, which runs synchronously, is over).

Failures are `EngineError` with ENDPOINT_ERROR ("Endpoint not found", "VAD not active for
endpoint"); the control layer reports them in the VAD family.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from callbridge.engine.endpoint import Endpoint
from callbridge.engine.errors import endpoint_error
from callbridge.engine.session import MediaSession
from callbridge.media.vad import (
    HANGOVER_MS,
    VAD_RATE,
    Silence,
    SpeechStarted,
    VadError,
    VadEvent,
    VoiceActivity,
    create_detector,
)

__all__ = ["SessionVad", "start_vad", "stop_vad"]

_HANGOVER_S: Final = HANGOVER_MS / 1000
_TRANSFERRED: Final = "endpoint_transferred"
"""The `SessionObserver.endpoint_leaving` reason of an endpoint moving to another session."""


class _Monitor:
    """The audio tap of one monitored endpoint."""

    __slots__ = ("_accounted", "activity", "endpoint_id", "last_audio", "owner")

    def __init__(
        self, owner: SessionVad, endpoint_id: str, activity: VoiceActivity, now: float
    ) -> None:
        self.owner = owner
        self.endpoint_id = endpoint_id
        self.activity = activity
        self.last_audio = now
        """Monotonic time of the last frame, seconds."""
        self._accounted = now
        """Up to when missing audio has been counted as silence, seconds."""

    def on_frame(self, pcm: bytes, now: float) -> None:
        self.last_audio = self._accounted = now
        try:
            events = self.activity.feed(pcm)
        except VadError as error:
            self.owner.failed(self, str(error))
            return
        for event in events:
            self.owner.report(self.endpoint_id, event)

    def check_gap(self, now: float) -> None:
        """No frame for the hangover or more: silence by wall clock."""
        if now - self.last_audio < _HANGOVER_S:
            return
        missing_ms = int((now - self._accounted) * 1000)
        self._accounted = now
        for event in self.activity.missing(missing_ms):
            self.owner.report(self.endpoint_id, event)


class SessionVad:
    """The VAD monitors of one session (created by the first `vad.start`)."""

    def __init__(self, session: MediaSession) -> None:
        self.session = session
        self.monitors: dict[str, _Monitor] = {}
        self._clock_registered = False
        session.observers.append(self)

    @classmethod
    def find(cls, session: MediaSession) -> SessionVad | None:
        for observer in session.observers:
            if isinstance(observer, cls):
                return observer
        return None

    def start(self, endpoint_id: str, activity: VoiceActivity) -> None:
        """Monitor the endpoint with `activity` (replacing a monitor it has)."""
        self.session.endpoint(endpoint_id)
        self._drop(endpoint_id)
        self._adopt(_Monitor(self, endpoint_id, activity, time.monotonic()))

    def _adopt(self, monitor: _Monitor) -> None:
        session = self.session
        monitor.owner = self
        self.monitors[monitor.endpoint_id] = monitor
        session.vad_active.add(monitor.endpoint_id)
        session.add_audio_tap(monitor.endpoint_id, VAD_RATE, monitor)
        if not self._clock_registered:
            self._clock_registered = True
            session.context.clock.add_housekeeping(self._housekeeping)

    def stop(self, endpoint_id: str) -> None:
        self._drop(endpoint_id)

    def report(self, endpoint_id: str, event: VadEvent) -> None:
        if isinstance(event, SpeechStarted):
            self.session.emit("vad.speech_started", {"endpoint_id": endpoint_id})
        elif isinstance(event, Silence):
            self.session.emit(
                "vad.silence",
                {"endpoint_id": endpoint_id, "silence_duration_ms": event.duration_ms},
            )

    def failed(self, monitor: _Monitor, error: str) -> None:
        if self.monitors.get(monitor.endpoint_id) is monitor:
            self._drop(monitor.endpoint_id)
            self.session.emit("vad.error", {"endpoint_id": monitor.endpoint_id, "error": error})

    def _drop(self, endpoint_id: str, *, tap: bool = True) -> None:
        monitor = self.monitors.pop(endpoint_id, None)
        if monitor is None:
            return
        self.session.vad_active.discard(endpoint_id)
        if tap:
            self.session.remove_audio_tap(endpoint_id, monitor)
        if not self.monitors:
            self._release_clock()

    def _release_clock(self) -> None:
        if self._clock_registered:
            self._clock_registered = False
            self.session.context.clock.discard_housekeeping(self._housekeeping)

    def _housekeeping(self, now: float) -> None:
        for monitor in list(self.monitors.values()):
            monitor.check_gap(now)

    # -- SessionObserver -----------------------------------------------------------------------

    def endpoint_leaving(self, endpoint: Endpoint, reason: str) -> None:
        monitor = self.monitors.get(endpoint.id)
        self._drop(endpoint.id, tap=False)  # the session takes the endpoint's taps with it
        if monitor is not None and reason == _TRANSFERRED:
            asyncio.get_running_loop().call_soon(_follow, endpoint, monitor)

    def session_ending(self, reason: str) -> None:
        self.monitors.clear()
        self.session.vad_active.clear()
        self._release_clock()


def _follow(endpoint: Endpoint, monitor: _Monitor) -> None:
    """Monitor a transferred endpoint in the session it is in now (the source after a rollback)."""
    host = endpoint.host
    if endpoint.closed or not isinstance(host, MediaSession) or not host.alive:
        return
    if host.endpoints.get(endpoint.id) is not endpoint:
        return
    (SessionVad.find(host) or SessionVad(host))._adopt(monitor)


async def start_vad(
    session: MediaSession,
    endpoint_id: str,
    silence_interval_ms: int,
    speech_threshold: float,
    detector: str | None = None,
) -> None:
    """`vad.start`: `detector` is "webrtc" or "silero" (None: the configured default). The
    detector is made in a thread (the first Silero one loads its model, a few hundred ms); one
    that cannot be made is reported as `vad.error`."""
    session.check_alive()
    session.endpoint(endpoint_id)
    config = session.context.config
    try:
        made = await asyncio.to_thread(
            create_detector,
            detector or config.vad_detector,
            speech_threshold,
            config.vad_silero_model,
        )
    except VadError as error:
        session.emit("vad.error", {"endpoint_id": endpoint_id, "error": str(error)})
        return
    session.check_alive()  # the session or the endpoint may have gone meanwhile
    activity = VoiceActivity(made, speech_threshold, silence_interval_ms)
    (SessionVad.find(session) or SessionVad(session)).start(endpoint_id, activity)


def stop_vad(session: MediaSession, endpoint_id: str) -> None:
    """`vad.stop`: ENDPOINT_ERROR "VAD not active for endpoint" when it is not monitored."""
    session.check_alive()
    vad = SessionVad.find(session)
    if vad is None or endpoint_id not in vad.monitors:
        raise endpoint_error("VAD not active for endpoint")
    vad.stop(endpoint_id)
