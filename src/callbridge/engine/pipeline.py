"""The decoded media path of a session: fan-out of source PCM, encoding, mixing, timestamps.

Shape of the work per 20 ms frame (everything not passthrough):

* A source produces one PCM frame at its own rate (`SourceChain.push`): an RTP source when the
  jitter buffer releases a packet (or conceals a lost one), a file or tone on the clock, a
  bridge when its partner delivers. It is decoded once.
* The chain resamples it once per output rate that a consumer needs (stateful, anti-aliased),
  then hands it at once to every single-source `EncodeGroup` at that rate (transcoding adds no
  tick of latency), and queues it in a `FrameFifo` when a mixer needs that rate.
* On the media clock a `MixStage` per rate takes one frame per source from the FIFOs, makes
  every destination's N-1 mix at once, and hands each mix to its `EncodeGroup`.
* An `EncodeGroup` encodes once for every destination with the same format and the same
  sources; each destination stamps its own header (`OutputStream` keeps its timestamps).

PCM is mono int16 little-endian bytes; rates are Hz; times monotonic seconds.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np

from callbridge.media.avcodecs import OPUS_COMPLEXITY, OpusEncoder
from callbridge.media.codecs import CodecSpec, Encoder, create_encoder
from callbridge.media.errors import MediaError
from callbridge.media.mixer import mix_minus
from callbridge.media.pcm import SAMPLE_DTYPE, Samples, fit_frame
from callbridge.media.resample import Resampler

if TYPE_CHECKING:
    from callbridge.engine.metrics import EngineMetrics

__all__ = [
    "EncodeGroup",
    "FrameFifo",
    "MixStage",
    "OutputFormat",
    "OutputStream",
    "SourceChain",
]

_GAP_S: Final = 0.15
"""Output silent for longer than this: timestamps jump by the wall-clock gap (new talkspurt).

Above the jitter buffer's 60 ms hold plus a tick, so frames it releases late (a concealed gap
and the packets held behind it) keep consecutive timestamps."""
_FIFO_FRAMES: Final = 4
"""Most frames a mixer input holds (80 ms); older ones are dropped."""
_TRIM_AFTER_TICKS: Final = 50
"""A mixer input that had a spare frame for this many ticks in a row drops one (latency trim).

Long enough that a source whose packets straddle the tick boundary keeps its spare frame
through the next late packet instead of alternating between a gap and a dropped frame."""
_READY_MARGIN_S: Final = 0.0005
"""A packet must have arrived this long before a tick's nominal time to be mixed in it."""


class FrameConsumer(Protocol):
    def on_frame(self, pcm: bytes, now: float) -> None: ...


class Destination(Protocol):
    def deliver(self, payload: bytes, now: float) -> None: ...


@dataclass(frozen=True)
class OutputFormat:
    """What a destination consumes: a codec at its sample rate, sent under `payload_type`."""

    spec: CodecSpec

    @property
    def key(self) -> tuple[str, int]:
        """Identity of the encoded payload (the PT may differ per destination)."""
        return (self.spec.name.lower(), self.spec.sample_rate)

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate


class OutputStream:
    """RTP timestamps of one destination, continuous across passthrough and generated frames.

    Generated frames advance by one frame (`step`, RTP clock units); after silence longer than
    `_GAP_S` the timestamp jumps by the elapsed time and the marker starts a new talkspurt.
    Passthrough keeps the source's timestamps plus an offset that is 0 when the destination
    has sent nothing yet, and otherwise continues right after the last timestamp sent.
    """

    __slots__ = ("last_time", "last_timestamp", "passthrough_offset", "step")

    def __init__(self) -> None:
        self.last_timestamp: int | None = None
        """Last RTP timestamp sent (32-bit), None before the first packet."""
        self.last_time = 0.0
        self.passthrough_offset: int | None = None
        """Offset added to forwarded timestamps; None until the first forwarded packet."""
        self.step = 160

    def generated(self, now: float) -> tuple[int, bool]:
        """Timestamp and marker for the next generated frame sent at `now`."""
        last = self.last_timestamp
        self.passthrough_offset = None
        if last is None:
            timestamp = secrets.randbits(32)
            marker = True
        else:
            gap = now - self.last_time
            if gap > _GAP_S:
                timestamp = (last + self.step * round(gap / 0.02)) & 0xFFFFFFFF
                marker = True
            else:
                timestamp = (last + self.step) & 0xFFFFFFFF
                marker = False
        return timestamp, marker

    def sent(self, timestamp: int, now: float) -> None:
        self.last_timestamp = timestamp
        self.last_time = now

    def begin_passthrough(self, source_timestamp: int) -> int:
        """The offset for a passthrough run that starts with `source_timestamp`."""
        last = self.last_timestamp
        offset = 0 if last is None else (last + self.step - source_timestamp) & 0xFFFFFFFF
        self.passthrough_offset = offset
        return offset


class FrameFifo:
    """Frames of one source at one rate, waiting for the mixer's tick (at most 80 ms).

    A frame is due at the first tick whose nominal time is at least `_READY_MARGIN_S` after
    its arrival, judged on nominal tick times so the tick's own lateness does not make a
    source flip between two ticks; a frame pushed during the tick itself (file, tone, a bridge
    fed earlier in the same frame) carries the tick time and is due at once. `take` pops once
    per tick for every mixer that reads this input. An input that keeps a spare due frame for
    `_TRIM_AFTER_TICKS` ticks drops one, so one late packet does not add latency for good.
    """

    __slots__ = ("_current", "_frames", "_spare_ticks", "_tick", "dropped", "underruns")

    def __init__(self) -> None:
        self._frames: deque[tuple[float, bytes]] = deque(maxlen=_FIFO_FRAMES)
        self._tick = -1
        self._current: bytes | None = None
        self._spare_ticks = 0
        self.underruns = 0
        self.dropped = 0

    def append(self, pcm: bytes, arrival: float) -> None:
        self._frames.append((arrival, pcm))

    def take(self, tick: int, tick_time: float) -> bytes | None:
        """This tick's frame (the same for every caller in the tick), None if none is due."""
        if tick == self._tick:
            return self._current
        self._tick = tick
        frames = self._frames
        limit = tick_time - _READY_MARGIN_S
        due = 0
        for arrival, _ in frames:
            if arrival > limit and arrival != tick_time:
                break
            due += 1
        if not due:
            self._spare_ticks = 0
            self.underruns += 1
            self._current = None
            return None
        if due > 1:
            self._spare_ticks += 1
            if self._spare_ticks >= _TRIM_AFTER_TICKS:
                frames.popleft()
                self.dropped += 1
                self._spare_ticks = 0
        else:
            self._spare_ticks = 0
        self._current = frames.popleft()[1]
        return self._current


class _RateRoute:
    __slots__ = ("consumers", "fifo", "rate", "resampler")

    def __init__(self, rate: int, resampler: Resampler | None) -> None:
        self.rate = rate
        self.resampler = resampler
        self.consumers: tuple[FrameConsumer, ...] = ()
        self.fifo: FrameFifo | None = None


class SourceChain:
    """Fans one source's PCM (at `rate`) out to every rate and consumer that needs it."""

    __slots__ = ("_routes", "frame_samples", "rate")

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.frame_samples = rate // 50
        self._routes: tuple[_RateRoute, ...] = ()

    @property
    def active(self) -> bool:
        """Some destination needs this source decoded."""
        return bool(self._routes)

    def fifo(self, rate: int) -> FrameFifo:
        for route in self._routes:
            if route.rate == rate and route.fifo is not None:
                return route.fifo
        raise KeyError(rate)

    def configure(self, consumers: dict[int, list[FrameConsumer]], fifo_rates: set[int]) -> None:
        """Set what is needed per output rate; resamplers and FIFOs of kept rates survive."""
        old = {route.rate: route for route in self._routes}
        routes = []
        for rate in sorted(set(consumers) | fifo_rates):
            route = old.get(rate)
            if route is None:
                route = _RateRoute(rate, None if rate == self.rate else Resampler(self.rate, rate))
            route.consumers = tuple(consumers.get(rate, ()))
            if rate in fifo_rates:
                if route.fifo is None:
                    route.fifo = FrameFifo()
            else:
                route.fifo = None
            routes.append(route)
        self._routes = tuple(routes)

    def push(self, pcm: bytes, now: float) -> None:
        """One 20 ms frame from the source (padded or cut to 20 ms if it is not)."""
        if len(pcm) != self.frame_samples * 2:
            pcm = fit_frame(pcm, self.frame_samples)
        for route in self._routes:
            resampler = route.resampler
            out = pcm if resampler is None else resampler.resample(pcm)
            for consumer in route.consumers:
                consumer.on_frame(out, now)
            if route.fifo is not None:
                route.fifo.append(out, now)


class EncodeGroup:
    """Encodes one stream of frames once for every destination that wants exactly it."""

    __slots__ = ("destinations", "encoder", "format", "frame_samples", "metrics")

    def __init__(
        self,
        output_format: OutputFormat,
        destinations: Sequence[Destination],
        metrics: EngineMetrics,
        previous: EncodeGroup | None = None,
        opus_complexity: int = OPUS_COMPLEXITY,
    ) -> None:
        """`previous`: the group this one replaces after a rebuild; its encoder state is kept.

        `opus_complexity` (0-10) trades Opus quality for CPU: 0 costs about half of 5.
        """
        self.format = output_format
        self.destinations = tuple(destinations)
        self.metrics = metrics
        self.frame_samples = output_format.sample_rate // 50
        if previous is not None and previous.format.key == output_format.key:
            self.encoder: Encoder = previous.encoder
        elif output_format.spec.name.lower() == "opus":
            self.encoder = OpusEncoder(complexity=opus_complexity)
        else:
            self.encoder = create_encoder(output_format.spec)

    def on_frame(self, pcm: bytes, now: float) -> None:
        if len(pcm) != self.frame_samples * 2:
            pcm = fit_frame(pcm, self.frame_samples)
        try:
            payload = self.encoder.encode(pcm)
        except MediaError:
            self.metrics.transcode_errors_total += 1
            return
        for destination in self.destinations:
            destination.deliver(payload, now)


class MixStage:
    """The N-1 mix of every mixing destination at one sample rate, once per tick.

    All mixing destinations of a session hear "everyone but themselves" (routing is a full mesh),
    so one `mix_minus` over this tick's frames serves them all; the rare destination whose
    sources differ (a bridge, which never hears another bridge) gets its own sum.
    """

    __slots__ = ("custom", "inputs", "keys", "outputs", "samples")

    def __init__(
        self,
        rate: int,
        inputs: Iterable[tuple[str, FrameFifo]],
        outputs: Iterable[tuple[str, EncodeGroup]],
        custom: Iterable[tuple[EncodeGroup, tuple[str, ...]]] = (),
    ) -> None:
        self.samples = rate // 50
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        """(mix key, group): the key is a destination id, or "" for those that are no source."""
        self.keys = tuple(key for key, _ in self.outputs)
        self.custom = tuple(custom)

    def run(self, tick: int, now: float) -> None:
        """Mix this tick's frames and hand each mix to its encoder; silent ticks send nothing."""
        frames: dict[str, Samples] = {}
        for source_id, fifo in self.inputs:
            frame = fifo.take(tick, now)
            if frame is not None:
                frames[source_id] = np.frombuffer(frame, dtype=SAMPLE_DTYPE)
        if not frames:
            return
        if self.outputs:
            mixes = mix_minus(frames, self.keys, self.samples)
            for key, group in self.outputs:
                group.on_frame(mixes[key].tobytes(), now)
        for group, source_ids in self.custom:
            present = [frames[source_id] for source_id in source_ids if source_id in frames]
            if not present:
                continue
            total = present[0].astype(np.int32)
            for frame_samples in present[1:]:
                total += frame_samples
            np.clip(total, -32768, 32767, out=total)
            group.on_frame(total.astype(SAMPLE_DTYPE).tobytes(), now)
