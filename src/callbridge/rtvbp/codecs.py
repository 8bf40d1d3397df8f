"""Which offered audio codec an application answers ``session.initialize`` with.

Pure choice over the babelforce.v1 codec offers, shared by the SDK's `Application` and the
media engine's inbound legs; it knows nothing of sessions or the web layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.errors import BAD_REQUEST, RemoteError

__all__ = [
    "CodecChooser",
    "first_l16",
    "is_l16",
    "narrowband_only",
    "prefer_sample_rate",
    "select_codec",
]

CodecChooser = Callable[[Sequence[bf.AudioCodec]], "bf.AudioCodec | None"]
"""Picks one of the offers, or None when none is usable."""


def is_l16(codec: bf.AudioCodec) -> bool:
    """True for a codec callbridge carries: L16, 16 bits, a rate that divides into 20 ms frames."""
    return (
        codec.name.upper() == "L16"
        and codec.bit_depth == 16
        and codec.channels >= 1
        and codec.sample_rate > 0
        and codec.sample_rate % 50 == 0
    )


def first_l16(offers: Sequence[bf.AudioCodec]) -> bf.AudioCodec | None:
    """The default codec choice: the first offered L16 codec (mono preferred)."""
    mono = [codec for codec in offers if is_l16(codec) and codec.channels == 1]
    return mono[0] if mono else next((codec for codec in offers if is_l16(codec)), None)


def select_codec(offers: Sequence[bf.AudioCodec], choose: CodecChooser) -> bf.AudioCodec:
    """The codec to answer ``session.initialize`` with, picked by `choose` among `offers`.

    Raises RemoteError 400 when nothing was offered or nothing offered is usable, and
    RuntimeError when `choose` returns a codec that was not offered (a bug of the chooser).
    """
    if not offers:
        raise RemoteError(BAD_REQUEST, "no audio codec offerings")
    codec = choose(offers)
    if codec is None:
        offered = ", ".join(offer.id for offer in offers)
        raise RemoteError(BAD_REQUEST, f"none of the offered audio codecs is supported: {offered}")
    if codec not in offers:
        raise RuntimeError(f"codec chooser returned {codec.id}, which was not offered")
    return codec


def prefer_sample_rate(*rates: int) -> CodecChooser:
    """A codec choice that takes the first of `rates` offered as mono L16, else `first_l16`."""

    def choose(offers: Sequence[bf.AudioCodec]) -> bf.AudioCodec | None:
        for rate in rates:
            for codec in offers:
                if is_l16(codec) and codec.channels == 1 and codec.sample_rate == rate:
                    return codec
        return first_l16(offers)

    return choose


def narrowband_only(choose: CodecChooser) -> CodecChooser:
    """`choose` among the mono L16/8000 offers only: what a WebRTC (PCMU) call can carry."""

    def narrowband(offers: Sequence[bf.AudioCodec]) -> bf.AudioCodec | None:
        usable = [
            codec
            for codec in offers
            if is_l16(codec) and codec.sample_rate == 8000 and codec.channels == 1
        ]
        return choose(usable) if usable else None

    return narrowband
