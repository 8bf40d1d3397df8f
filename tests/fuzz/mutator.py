"""A mutation fuzzer over the targets: hypothesis draws the seed inputs, then cheap random
mutations (bit flips, special bytes, inserted, deleted, repeated and spliced ranges, tokens of
the target's syntax) produce inputs at tens of thousands per second, where hypothesis itself
manages a few hundred. Deterministic for a given `seed`.
"""

from __future__ import annotations

import random
import time
import traceback
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings

from tests.fuzz.targets import Target

_SPECIAL = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x20, 0x0A, 0x0D, 0x22, 0x5C)
TOKENS = (
    b'"', b"{", b"}", b"[", b"]", b",", b":", b"null", b"true", b"-0", b"1e999", b"9" * 25,
    b'"\\u0000"', b'"\\ud800"', b'"version":"1"', b'"id":"x"', b'"method":"',
    b"\r\n", b"a=rtpmap:", b"m=audio 0 RTP/AVP ", b"c=IN IP4 ", b"\x80", b"\xc8", b"\xff\xff",
)  # fmt: skip


@dataclass
class FuzzReport:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    failures: list[tuple[bytes, str]] = field(default_factory=list)
    """(input, traceback) of each unhandled exception (the first few are kept)."""
    unhandled: int = 0


def draw_seeds(target: Target, count: int, rng: random.Random) -> list[bytes]:
    """`count` inputs drawn from the target's hypothesis strategy."""
    seeds: list[bytes] = []

    @settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(target.inputs)
    def collect(data: bytes) -> None:
        seeds.append(data)

    while len(seeds) < count:
        collect.hypothesis.fuzz_one_input(rng.randbytes(1024))
    return seeds


def mutate(data: bytes, seeds: list[bytes], rng: random.Random) -> bytes:
    buffer = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 6))):
        choice = rng.randrange(8)
        size = len(buffer)
        position = rng.randrange(size + 1)
        if choice == 0 and size:
            buffer[position % size] ^= 1 << rng.randrange(8)
        elif choice == 1 and size:
            buffer[position % size] = rng.choice(_SPECIAL)
        elif choice == 2:
            buffer[position:position] = rng.randbytes(rng.randrange(1, 9))
        elif choice == 3 and size:
            del buffer[position : position + rng.randrange(1, 17)]
        elif choice == 4 and size:
            start = rng.randrange(size)
            buffer[position:position] = buffer[start : start + rng.randrange(1, 33)]
        elif choice == 5:
            other = rng.choice(seeds)
            start = rng.randrange(len(other) + 1)
            buffer[position:] = other[start:]
        elif choice == 6:
            buffer[position:position] = rng.choice(TOKENS)
        elif size:
            del buffer[position:]
    return bytes(buffer)


def fuzz(target: Target, inputs: int, *, seed: int = 0, seeds: int = 300) -> FuzzReport:
    """Run `inputs` inputs (the seeds themselves first) through `target`."""
    rng = random.Random(seed)
    corpus = draw_seeds(target, seeds, rng)
    report = FuzzReport(target.name)
    run, expected = target.run, target.expected
    started = time.perf_counter()
    for index in range(inputs):
        data = corpus[index] if index < len(corpus) else mutate(rng.choice(corpus), corpus, rng)
        try:
            run(data)
        except expected:
            pass
        except Exception:
            report.unhandled += 1
            if len(report.failures) < 5:
                report.failures.append((data, traceback.format_exc()))
    report.inputs = inputs
    report.seconds = time.perf_counter() - started
    return report
