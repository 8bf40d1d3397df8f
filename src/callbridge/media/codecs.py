"""Codec registry: what each audio codec is on the wire, and encoders/decoders for it.

PCM on the codec side is always mono int16 little-endian at the codec's *real* sample rate,
which is not always its RTP clock rate: G.722 is 16000 Hz audio on an 8000 Hz RTP clock.
Opus is the exception: its PCM rate is chosen per leg (`with_sample_rate`, 8000-48000 Hz, what
its partners need) while its RTP clock stays 48000 Hz.
Stateful codecs (G.722, Opus) keep state per stream: one encoder per outbound stream, one
decoder per inbound stream. G.711 and L16 are stateless and cheap.

Lost packets: `Decoder.conceal` fills the gap. Opus uses libopus's own packet-loss concealment
(it models the voice); G.711, G.722 and L16 have none, so the last good frame is played
backwards and faded out over one frame, then silence (see `concealment`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from callbridge.media import g711
from callbridge.media.avcodecs import G722Decoder, G722Encoder
from callbridge.media.concealment import FadeConcealer
from callbridge.media.errors import CodecError
from callbridge.media.opus import (
    OPUS_BIT_RATE,
    OPUS_COMPLEXITY,
    OPUS_FRAME_DURATIONS_MS,
    OPUS_RATES,
    OpusDecoder,
    OpusEncoder,
)
from callbridge.media.pcm import DEFAULT_PTIME_MS, frame_samples, swap_byte_order

ByteOrder = Literal["little", "big"]


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """An audio codec as negotiated in SDP and carried in RTP."""

    name: str
    """Encoding name: "PCMU", "PCMA", "G722", "opus" (lower-case, as rtpbridge says) or "L16"."""
    payload_type: int
    """Static payload type, or the default dynamic one (opus 111, internal L16 127)."""
    clock_rate: int
    """RTP timestamp and SDP clock in Hz (8000 for G.722, 48000 for Opus)."""
    sample_rate: int
    """Real audio sample rate in Hz of the PCM given to and taken from the codec."""
    rtpmap: str
    """The SDP rtpmap encoding, e.g. "opus/48000/2"."""
    channels: int = 1
    """Channels of the PCM encoded and decoded (Opus still says /2 in its rtpmap)."""
    fmtp: str | None = None
    """SDP format parameters, without the "a=fmtp:<pt> " prefix."""
    byte_order: ByteOrder | None = None
    """Sample byte order of the payload, for L16 only (RTP says big, RTVBP and bridges little)."""

    @property
    def samples_per_frame(self) -> int:
        """Samples (at `sample_rate`) in one 20 ms frame."""
        return frame_samples(self.sample_rate, DEFAULT_PTIME_MS)

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp increment (at `clock_rate`) per 20 ms frame."""
        return frame_samples(self.clock_rate, DEFAULT_PTIME_MS)

    def with_payload_type(self, payload_type: int) -> CodecSpec:
        """The same codec under another (negotiated, dynamic) payload type."""
        return dataclasses.replace(self, payload_type=payload_type)

    def with_sample_rate(self, sample_rate: int) -> CodecSpec:
        """Opus coded at another PCM rate (one of `OPUS_RATES`); the RTP clock is unchanged."""
        if self.name.lower() != "opus" or sample_rate not in OPUS_RATES:
            raise CodecError(f"{self.name} cannot be coded at {sample_rate} Hz")
        return dataclasses.replace(self, sample_rate=sample_rate)


PCMU: Final = CodecSpec("PCMU", 0, 8000, 8000, "PCMU/8000")
PCMA: Final = CodecSpec("PCMA", 8, 8000, 8000, "PCMA/8000")
G722: Final = CodecSpec("G722", 9, 8000, 16000, "G722/8000")
OPUS: Final = CodecSpec(
    "opus",
    111,
    48000,
    48000,
    "opus/48000/2",
    fmtp="minptime=10;useinbandfec=1;stereo=0;sprop-stereo=0",
)
L16_BRIDGE: Final = CodecSpec("L16", 127, 48000, 48000, "L16/48000", byte_order="little")
"""Internal L16 of session bridges: little-endian 48000 Hz, payload type 127."""


def l16(sample_rate: int, byte_order: ByteOrder = "little", payload_type: int = 127) -> CodecSpec:
    """L16 at `sample_rate` Hz: little-endian for RTVBP and bridges, big-endian for RTP."""
    frame_samples(sample_rate)  # validates the rate
    return CodecSpec(
        "L16",
        payload_type,
        sample_rate,
        sample_rate,
        f"L16/{sample_rate}",
        byte_order=byte_order,
    )


_BY_NAME: Final = {spec.name.lower(): spec for spec in (PCMU, PCMA, G722, OPUS, L16_BRIDGE)}
_BY_STATIC_PAYLOAD_TYPE: Final = {spec.payload_type: spec for spec in (PCMU, PCMA, G722)}


def codec_by_name(name: str) -> CodecSpec | None:
    """The codec called `name` (case-insensitive; "L16" is the bridge's), or None if unknown."""
    return _BY_NAME.get(name.lower())


def codec_by_payload_type(payload_type: int) -> CodecSpec | None:
    """The codec of a static payload type (0 PCMU, 8 PCMA, 9 G722), or None."""
    return _BY_STATIC_PAYLOAD_TYPE.get(payload_type)


def codec_by_rtpmap(encoding: str, payload_type: int | None = None) -> CodecSpec | None:
    """The codec of an SDP rtpmap encoding such as "opus/48000/2" or "L16/16000", or None.

    The clock rate must match the codec's; L16 of an RTP rtpmap is big-endian (RFC 3551).
    """
    name, _, rest = encoding.strip().partition("/")
    clock_text = rest.partition("/")[0]
    if not clock_text.isdigit():
        return None
    clock_rate = int(clock_text)
    if name.lower() == "l16":
        try:
            spec = l16(clock_rate, "big")
        except ValueError:
            return None
    else:
        found = codec_by_name(name)
        if found is None or found.clock_rate != clock_rate:
            return None
        spec = found
    if payload_type is not None and payload_type != spec.payload_type:
        spec = spec.with_payload_type(payload_type)
    return spec


PACKET_DURATIONS_MS: Final = (10, 20, 30, 40, 50, 60)
"""Packet durations callbridge sends G.711, G.722 and L16 in; Opus uses its frame durations."""


def packet_duration_ms(spec: CodecSpec, ptime_ms: int | None, maxptime_ms: int | None) -> int:
    """The packet duration (ms) to send `spec` in to a peer whose SDP says `a=ptime` and
    `a=maxptime` (None when absent): the longest supported one up to the ptime (20 ms without
    one) and never above the maxptime; the shortest supported one if none fits."""
    wanted = ptime_ms or DEFAULT_PTIME_MS
    if maxptime_ms:
        wanted = min(wanted, maxptime_ms)
    supported = OPUS_FRAME_DURATIONS_MS if spec.name.lower() == "opus" else PACKET_DURATIONS_MS
    fitting = [duration for duration in supported if duration <= wanted]
    return max(fitting) if fitting else supported[0]


class Encoder(Protocol):
    """Encodes one frame of int16 PCM at the codec's sample rate into one RTP payload."""

    def encode(self, pcm: bytes) -> bytes: ...

    def reset(self) -> None: ...


class Decoder(Protocol):
    """Decodes RTP payloads into int16 PCM at the codec's sample rate, and conceals losses.

    `decode` takes a payload of any frame duration the codec allows (10-60 ms Opus, 30 ms
    PCMU...); `conceal(samples)` returns that many samples to play in place of lost audio.
    """

    def decode(self, payload: bytes) -> bytes: ...

    def conceal(self, samples: int) -> bytes: ...

    def reset(self) -> None: ...


class G711Encoder:
    """PCMU or PCMA: one byte per sample, any frame length, no state."""

    __slots__ = ("_encode",)

    def __init__(self, alaw: bool = False) -> None:
        self._encode = g711.alaw_encode if alaw else g711.ulaw_encode

    def encode(self, pcm: bytes) -> bytes:
        """G.711 bytes of int16 PCM at 8000 Hz."""
        return self._encode(pcm)

    def reset(self) -> None:
        """Nothing to reset: G.711 is stateless."""


class G711Decoder:
    """PCMU or PCMA of any frame length; concealment fades out the last good frame."""

    __slots__ = ("_concealer", "_decode")

    def __init__(self, alaw: bool = False) -> None:
        self._decode = g711.alaw_decode if alaw else g711.ulaw_decode
        self._concealer = FadeConcealer(frame_samples(8000))

    def decode(self, payload: bytes) -> bytes:
        """int16 PCM at 8000 Hz of G.711 bytes."""
        pcm = self._decode(payload)
        self._concealer.remember(pcm)
        return pcm

    def conceal(self, samples: int) -> bytes:
        """`samples` samples in place of lost audio: the last frame reversed and faded out."""
        return self._concealer.conceal(samples)

    def reset(self) -> None:
        """Forget the audio kept for concealment."""
        self._concealer.reset()


class L16Encoder:
    """L16: PCM as it is (little-endian), or byte-swapped for big-endian RTP."""

    __slots__ = ("big_endian",)

    def __init__(self, byte_order: ByteOrder = "little") -> None:
        self.big_endian = byte_order == "big"

    def encode(self, pcm: bytes) -> bytes:
        """The payload of int16 little-endian PCM."""
        return swap_byte_order(pcm) if self.big_endian else pcm

    def reset(self) -> None:
        """Nothing to reset: L16 is stateless."""


class L16Decoder:
    """L16 of any frame length; concealment fades out the last good frame."""

    __slots__ = ("_concealer", "big_endian")

    def __init__(self, sample_rate: int, byte_order: ByteOrder = "little") -> None:
        self.big_endian = byte_order == "big"
        self._concealer = FadeConcealer(frame_samples(sample_rate))

    def decode(self, payload: bytes) -> bytes:
        """int16 little-endian PCM of the payload (an odd trailing byte is dropped)."""
        if len(payload) % 2:
            payload = payload[:-1]
        pcm = swap_byte_order(payload) if self.big_endian else payload
        self._concealer.remember(pcm)
        return pcm

    def conceal(self, samples: int) -> bytes:
        """`samples` samples in place of lost audio: the last frame reversed and faded out."""
        return self._concealer.conceal(samples)

    def reset(self) -> None:
        """Forget the audio kept for concealment."""
        self._concealer.reset()


def create_encoder(
    spec: CodecSpec,
    ptime_ms: int = DEFAULT_PTIME_MS,
    *,
    opus_complexity: int = OPUS_COMPLEXITY,
    opus_bit_rate: int = OPUS_BIT_RATE,
) -> Encoder:
    """A new encoder for one outbound stream of `spec` with `ptime_ms` frames.

    `opus_complexity` (0-10) trades Opus encoder CPU for quality, `opus_bit_rate` (bit/s)
    bandwidth for quality; see docs/performance.md.
    """
    try:
        frame_samples(spec.sample_rate, ptime_ms)
    except ValueError as exc:
        raise CodecError(f"{spec.name}: {exc}") from exc
    name = spec.name.lower()
    if name in ("pcmu", "pcma"):
        return G711Encoder(alaw=name == "pcma")
    if name == "g722":
        return G722Encoder(ptime_ms)
    if name == "opus":
        return OpusEncoder(
            ptime_ms, opus_complexity, sample_rate=spec.sample_rate, bit_rate=opus_bit_rate
        )
    if name == "l16":
        return L16Encoder(spec.byte_order or "little")
    raise CodecError(f"unsupported codec {spec.name!r}")


def create_decoder(spec: CodecSpec) -> Decoder:
    """A new decoder for one inbound stream of `spec`."""
    name = spec.name.lower()
    if name in ("pcmu", "pcma"):
        return G711Decoder(alaw=name == "pcma")
    if name == "g722":
        return G722Decoder()
    if name == "opus":
        return OpusDecoder(spec.sample_rate)
    if name == "l16":
        return L16Decoder(spec.sample_rate, spec.byte_order or "little")
    raise CodecError(f"unsupported codec {spec.name!r}")
