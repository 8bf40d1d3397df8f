"""Recordings an RTVBP application asks for on an outbound leg (``recording.start/stop``).

The application is told a recording id; the file is a WAV (16 kHz) of the whole media session in
`split` mode, one channel per leg present when it starts (stereo for a two-leg call), named
``rtvbp-{endpoint_id}-{n}.wav`` inside `recording_dir`. It is an ordinary session recording:
`session.info` lists it, and it ends like any other (the leg leaving or the session ending stops
it with `recording.stopped`).
"""

from __future__ import annotations

from collections.abc import Sequence

from callbridge.engine.endpoint import EndpointHost
from callbridge.engine.errors import EngineError
from callbridge.engine.recording import SessionRecordings
from callbridge.engine.session import MediaSession
from callbridge.rtvbp.errors import INTERNAL, NOT_IMPLEMENTED, RemoteError

__all__ = ["LegRecorder"]


class LegRecorder:
    """The `Recorder` of one outbound RTVBP leg's `VoiceCall`."""

    def __init__(self, host: EndpointHost, endpoint_id: str) -> None:
        self._host = host
        self._endpoint_id = endpoint_id
        self._started: set[str] = set()
        self._count = 0

    def _recordings(self) -> SessionRecordings:
        session = self._host
        if not isinstance(session, MediaSession):
            raise RemoteError(NOT_IMPLEMENTED, "recording is not available on this leg")
        return SessionRecordings.of(session)

    async def start(self, tags: Sequence[str] | None) -> str:
        recordings = self._recordings()
        self._count += 1
        directory = self._host.context.config.recording_dir
        path = directory / f"rtvbp-{self._endpoint_id}-{self._count}.wav"
        try:
            recording_id = recordings.start(None, str(path), "wav", "split", 16000)
        except EngineError as error:
            raise RemoteError(INTERNAL, error.message) from None
        self._started.add(recording_id)
        return recording_id

    async def stop(self, recording_id: str) -> None:
        """KeyError unless this leg started it and it is still recording."""
        if recording_id not in self._started:
            raise KeyError(recording_id)
        self._started.discard(recording_id)
        try:
            self._recordings().stop(recording_id)
        except EngineError:
            raise KeyError(recording_id) from None
