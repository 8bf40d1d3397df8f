"""A tone generator endpoint (ringback, ringing, busy, beep, sine): one frame per clock tick.

Sendonly, state `playing`; with `duration_ms` it stops after that long with
`endpoint.tone.finished` and state `finished` (the endpoint stays until removed).
Tones are generated at 8000 Hz, or 48000 Hz for a sine too high for 8000 Hz.
"""

from __future__ import annotations

from typing import Final, cast, get_args

from callbridge.engine.endpoint import Endpoint, EndpointHost
from callbridge.engine.errors import INVALID_PARAMS, EngineError
from callbridge.engine.session import MediaSession
from callbridge.media.tones import MAX_FREQUENCY_HZ, MIN_FREQUENCY_HZ, ToneGenerator, ToneKind

__all__ = ["ToneEndpoint", "create_tone"]

_NARROWBAND_LIMIT_HZ: Final = 3800.0


async def create_tone(
    session: MediaSession, tone: str, frequency: float | None, duration_ms: int | None
) -> str:
    """`endpoint.create_tone`: returns the new endpoint's id."""
    session.touch()
    with session.slot() as slot:
        endpoint = ToneEndpoint(session, tone, frequency, duration_ms)
        slot.add(endpoint)
    return endpoint.id


class ToneEndpoint(Endpoint):
    kind = "tone"
    needs_tick = True
    generates = True

    def __init__(
        self,
        host: EndpointHost,
        tone: str,
        frequency: float | None,
        duration_ms: int | None,
    ) -> None:
        if tone not in get_args(ToneKind):
            raise EngineError(INVALID_PARAMS, f"unknown tone {tone!r}")
        if frequency is not None and not MIN_FREQUENCY_HZ <= frequency <= MAX_FREQUENCY_HZ:
            raise EngineError(INVALID_PARAMS, "frequency must be 20..20000 Hz")
        if duration_ms is not None and duration_ms <= 0:
            raise EngineError(INVALID_PARAMS, "duration_ms must be positive")
        super().__init__(host, "sendonly", "playing")
        self.tone = tone
        used_frequency = frequency if tone == "sine" else None
        rate = 48000 if (used_frequency or 0.0) > _NARROWBAND_LIMIT_HZ else 8000
        self._rate = rate
        self._generator = ToneGenerator(
            cast(ToneKind, tone), used_frequency, duration_ms, sample_rate=rate
        )

    @property
    def source_rate(self) -> int:
        return self._rate

    @property
    def stats_codec(self) -> str:
        return f"tone/{self._rate}Hz"

    def tick(self, now: float) -> None:
        if self.state != "playing":
            return
        frame = self._generator.next_frame()
        if frame is None:
            self.host.set_state(self, "finished", event=False)
            self.host.emit("endpoint.tone.finished", {"endpoint_id": self.id})
            return
        self.produce(frame, now)
