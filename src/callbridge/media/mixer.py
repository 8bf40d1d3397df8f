"""N-1 mixing and gain for conferences: each party hears everyone but itself.

The frames of one tick are summed once in int32; each destination's mix is that total minus
its own frame, saturated to int16. With N parties that is O(N) array work instead of the
O(N²) of summing every destination's sources separately.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from callbridge.media.pcm import SAMPLE_DTYPE, Samples

_INT16_MIN: Final = np.int32(-32768)
_INT16_MAX: Final = np.int32(32767)

Key = TypeVar("Key", bound=Hashable)


def _saturate(values: NDArray[np.int32] | NDArray[np.float32]) -> None:
    """Clamp `values` to the int16 range in place (two ufuncs: np.clip costs 2-4x more)."""
    np.minimum(values, _INT16_MAX, out=values)
    np.maximum(values, _INT16_MIN, out=values)


def mix_minus(
    frames: Mapping[Key, Samples], destinations: Iterable[Key], samples: int
) -> dict[Key, Samples]:
    """Each destination's mix of every frame but its own, `samples` int16 samples long.

    `frames` holds this tick's decoded frames (source -> int16 at the destinations' rate); a
    party with no frame this tick is silence, so a destination that is not a source hears the
    sum of all frames. Every frame must be `samples` long (ValueError otherwise). The arrays
    returned are read-only and may be shared between destinations.
    """
    if not frames:
        silent = np.zeros(samples, dtype=SAMPLE_DTYPE)
        silent.flags.writeable = False
        return dict.fromkeys(destinations, silent)
    for key, frame in frames.items():
        if frame.shape != (samples,):
            raise ValueError(f"frame of {key!r} has {frame.size} samples, expected {samples}")
    stack = np.array(list(frames.values()), dtype=np.int32)
    total = np.add.reduce(stack, axis=0)
    # Every source's mix in one pass: total minus own row, saturated.
    np.subtract(total, stack, out=stack)
    _saturate(stack)
    mixes = stack.astype(SAMPLE_DTYPE)
    mixes.flags.writeable = False  # rows and the total may be shared between destinations
    row_of = {key: row for row, key in enumerate(frames)}
    everyone: Samples | None = None
    result: dict[Key, Samples] = {}
    for destination in destinations:
        row = row_of.get(destination)
        if row is not None:
            result[destination] = mixes[row]
            continue
        if everyone is None:
            _saturate(total)
            everyone = total.astype(SAMPLE_DTYPE)
            everyone.flags.writeable = False
        result[destination] = everyone
    return result


def gain(samples: Samples, gain_db: float) -> Samples:
    """`samples` scaled by `gain_db` decibels, rounded and saturated to int16 (a new array)."""
    if gain_db == 0.0:
        return samples.copy()
    scaled = samples * np.float32(10.0 ** (gain_db / 20.0))
    np.rint(scaled, out=scaled)
    _saturate(scaled)
    return scaled.astype(SAMPLE_DTYPE)
