"""The decoded media path of a session: fan-out of source PCM, encoding, mixing, timestamps.

Shape of the work per 20 ms frame (everything not passthrough):

* A source produces PCM at its own rate (`SourceChain.push`): an RTP source when the jitter
  buffer releases a packet (or conceals a lost one), a file or tone on the clock, a bridge when
  its partner delivers. It is decoded once and cut into exact 20 ms frames, whatever the
  packet's duration (10-60 ms, or irregular): the remainder waits for the next packet, so no
  sample is dropped or padded and the pitch and duration stay right.
* The chain resamples it once per output rate that a consumer needs (stateful, anti-aliased),
  then hands it at once to every single-source `EncodeGroup` at that rate (transcoding adds no
  tick of latency), and queues it in a `FrameFifo` when a mixer needs that rate.
* On the media clock a `MixStage` per rate takes one frame per source from the FIFOs, makes
  every destination's N-1 mix at once, and hands each mix to its `EncodeGroup`.
* An `EncodeGroup` encodes once for every destination with the same format and the same
  sources, in packets of the destination's packet duration (its `a=ptime`, at most its
  `a=maxptime`); each destination stamps its own header (`OutputStream` keeps its timestamps).

PCM is mono int16 little-endian bytes; rates are Hz; times monotonic seconds.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

import numpy as np

from callbridge.media.codecs import CodecSpec, Encoder, create_encoder
from callbridge.media.errors import MediaError
from callbridge.media.mixer import mix_minus
from callbridge.media.opus import OPUS_BIT_RATE, OPUS_COMPLEXITY
from callbridge.media.pcm import (
    DEFAULT_PTIME_MS,
    SAMPLE_BYTES,
    SAMPLE_DTYPE,
    FrameChunker,
    fit_frame,
    frame_samples,
)
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
_FIFO_FRAMES: Final = 10
"""Most frames a mixer input holds (200 ms: a 60 ms packet, a spare and a burst after a stall);
the oldest is dropped (and counted) beyond."""
_TRIM_AFTER_TICKS: Final = 50
"""A mixer input that kept more than `_SPARE_FRAMES` spare frames for this many ticks in a row
is trimmed back to `_SPARE_FRAMES` (latency trim)."""
_SPARE_FRAMES: Final = 1
"""Spare frames a mixer input keeps for good: the cushion that absorbs a late packet.

Trimming the last spare away would make each later late packet cost a gap in the mix and,
once the next packet has caught up, a dropped frame: a source whose packets arrive just
before the tick boundary would lose a frame for every packet delayed across it."""
_RESTART_TICKS: Final = 5
"""A mixer input idle for this many ticks (or new) restarts with a one-tick cushion."""
_READY_MARGIN_S: Final = 0.0005
"""A packet must have arrived this long before a tick's nominal time to be mixed in it."""


class FrameConsumer(Protocol):
    def on_frame(self, pcm: bytes, now: float) -> None: ...


class Destination(Protocol):
    def deliver(self, payload: bytes, now: float) -> None: ...


@dataclass(frozen=True)
class OutputFormat:
    """What a destination consumes: a codec at its sample rate, sent under `payload_type`,
    in packets of `packet_ms` milliseconds (a whole number of samples of the codec)."""

    spec: CodecSpec
    packet_ms: int = DEFAULT_PTIME_MS

    @property
    def key(self) -> tuple[str, int, int]:
        """Identity of the encoded payload (the PT may differ per destination)."""
        return (self.spec.name.lower(), self.spec.sample_rate, self.packet_ms)

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp increment per packet (at the codec's clock rate)."""
        return frame_samples(self.spec.clock_rate, self.packet_ms)

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate


class OutputStream:
    """RTP timestamps of one destination, continuous across passthrough and generated frames.

    Generated packets advance by one packet (`step`, RTP clock units, of `step_s` seconds);
    after silence longer than `_GAP_S` the timestamp jumps by the elapsed time and the marker
    starts a new talkspurt.
    Passthrough keeps the source's timestamps plus an offset that is 0 when the destination
    has sent nothing yet, and otherwise continues right after the last timestamp sent.
    """

    __slots__ = ("last_time", "last_timestamp", "passthrough_offset", "step", "step_s")

    def __init__(self) -> None:
        self.last_timestamp: int | None = None
        """Last RTP timestamp sent (32-bit), None before the first packet."""
        self.last_time = 0.0
        self.passthrough_offset: int | None = None
        """Offset added to forwarded timestamps; None until the first forwarded packet."""
        self.step = 160
        self.step_s = DEFAULT_PTIME_MS / 1000

    def set_packet(self, step: int, step_s: float) -> None:
        """Generated packets of `step` RTP clock units lasting `step_s` seconds."""
        self.step = step
        self.step_s = step_s

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
                timestamp = (last + self.step * round(gap / self.step_s)) & 0xFFFFFFFF
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
    """Frames of one source at one rate, waiting for the mixer's tick (at most 200 ms).

    A frame is due at the first tick whose nominal time is at least `_READY_MARGIN_S` after
    its arrival, judged on nominal tick times so the tick's own lateness does not make a
    source flip between two ticks; a frame pushed during the tick itself (file, tone, a bridge
    fed earlier in the same frame) carries the tick time and is due at once. `take` pops once
    per tick for every mixer that reads this input. An input that keeps more than
    `_SPARE_FRAMES` spare due frames at every tick for `_TRIM_AFTER_TICKS` ticks drops the
    excess, so a burst or a faster sender does not add latency for good; the one spare frame
    left absorbs the next late packet. A source that starts (or resumes after
    `_RESTART_TICKS` idle ticks) from the network is held one tick, so that cushion exists from
    its first packet on; a frame pushed during the tick is not held. `dropped` counts trimmed
    and overflowed frames.
    """

    __slots__ = (
        "_current",
        "_frames",
        "_idle_ticks",
        "_least_spare",
        "_spare_ticks",
        "_tick",
        "dropped",
        "underruns",
    )

    def __init__(self) -> None:
        self._frames: deque[tuple[float, bytes]] = deque()
        self._tick = -1
        self._current: bytes | None = None
        self._spare_ticks = 0
        self._least_spare = _FIFO_FRAMES
        self._idle_ticks = _RESTART_TICKS
        self.underruns = 0
        self.dropped = 0

    def append(self, pcm: bytes, arrival: float) -> None:
        frames = self._frames
        if len(frames) >= _FIFO_FRAMES:
            frames.popleft()
            self.dropped += 1
        frames.append((arrival, pcm))

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
            self._least_spare = _FIFO_FRAMES
            self._idle_ticks += 1
            self.underruns += 1
            self._current = None
            return None
        restarting = self._idle_ticks >= _RESTART_TICKS
        self._idle_ticks = 0
        if restarting and frames[0][0] != tick_time:
            self._current = None
            return None
        spare = due - 1
        if spare > _SPARE_FRAMES:
            self._spare_ticks += 1
            if spare < self._least_spare:
                self._least_spare = spare
            if self._spare_ticks >= _TRIM_AFTER_TICKS:
                excess = self._least_spare - _SPARE_FRAMES
                for _ in range(excess):
                    frames.popleft()
                self.dropped += excess
                self._spare_ticks = 0
                self._least_spare = _FIFO_FRAMES
        else:
            self._spare_ticks = 0
            self._least_spare = _FIFO_FRAMES
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

    __slots__ = ("_chunker", "_routes", "frame_samples", "rate")

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.frame_samples = rate // 50
        self._routes: tuple[_RateRoute, ...] = ()
        self._chunker = FrameChunker(self.frame_samples * SAMPLE_BYTES)

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
        """Decoded audio of any duration: every whole 20 ms frame goes on now, the rest waits."""
        chunker = self._chunker
        if len(pcm) == chunker.frame_bytes and not chunker.pending_bytes:
            self._fan_out(pcm, now)
            return
        for frame in chunker.push(pcm):
            self._fan_out(frame, now)

    def _fan_out(self, pcm: bytes, now: float) -> None:
        for route in self._routes:
            resampler = route.resampler
            out = pcm if resampler is None else resampler.resample(pcm)
            for consumer in route.consumers:
                consumer.on_frame(out, now)
            if route.fifo is not None:
                route.fifo.append(out, now)


class EncodeGroup:
    """Encodes one stream of frames once for every destination that wants exactly it."""

    __slots__ = ("_packets", "destinations", "encoder", "format", "frame_samples", "metrics")

    def __init__(
        self,
        output_format: OutputFormat,
        destinations: Sequence[Destination],
        metrics: EngineMetrics,
        previous: EncodeGroup | None = None,
        opus_complexity: int = OPUS_COMPLEXITY,
        opus_bit_rate: int = OPUS_BIT_RATE,
    ) -> None:
        """`previous`: the group this one replaces after a rebuild; its encoder state is kept.

        `opus_complexity` (0-10) trades Opus quality for CPU: 0 costs about half of 5;
        `opus_bit_rate` (bit/s) bandwidth for quality.
        """
        self.format = output_format
        self.destinations = tuple(destinations)
        self.metrics = metrics
        self.frame_samples = output_format.sample_rate // 50
        self._packets: FrameChunker | None = None
        """Cuts 20 ms frames into packets when the packet duration is not 20 ms."""
        if previous is not None and previous.format.key == output_format.key:
            self.encoder: Encoder = previous.encoder
            self._packets = previous._packets
        else:
            self.encoder = create_encoder(
                output_format.spec,
                output_format.packet_ms,
                opus_complexity=opus_complexity,
                opus_bit_rate=opus_bit_rate,
            )
            if output_format.packet_ms != DEFAULT_PTIME_MS:
                packet_samples = frame_samples(output_format.sample_rate, output_format.packet_ms)
                self._packets = FrameChunker(packet_samples * SAMPLE_BYTES)

    def on_frame(self, pcm: bytes, now: float) -> None:
        """One 20 ms frame: encoded at once, or kept until it completes a longer packet."""
        if len(pcm) != self.frame_samples * SAMPLE_BYTES:
            pcm = fit_frame(pcm, self.frame_samples)
        if self._packets is None:
            self._encode(pcm, now)
            return
        for packet in self._packets.push(pcm):
            self._encode(packet, now)

    def _encode(self, pcm: bytes, now: float) -> None:
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
        frames: dict[str, bytes] = {}
        for source_id, fifo in self.inputs:
            frame = fifo.take(tick, now)
            if frame is not None:
                frames[source_id] = frame
        if not frames:
            return
        if self.outputs:
            mixes = mix_minus(frames, self.keys, self.samples)
            for key, group in self.outputs:
                group.on_frame(mixes[key], now)
        for group, source_ids in self.custom:
            present = [frames[source_id] for source_id in source_ids if source_id in frames]
            if not present:
                continue
            total = np.frombuffer(present[0], dtype=SAMPLE_DTYPE).astype(np.int32)
            for pcm in present[1:]:
                total += np.frombuffer(pcm, dtype=SAMPLE_DTYPE)
            np.clip(total, -32768, 32767, out=total)
            group.on_frame(total.astype(SAMPLE_DTYPE).tobytes(), now)
