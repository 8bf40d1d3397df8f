"""Audio codecs run on the calling thread: no codec or filter-graph threads per stream.

libav's default is one thread per core for every codec context and every filter graph (PyAV
re-chunks G.722 and Opus encoder input through one); with hundreds of streams that is
thousands of threads. The count is read from the kernel (/proc/self/task).
"""

from __future__ import annotations

import os

import pytest

from callbridge.media.codecs import G722, OPUS, PCMU, CodecSpec, create_decoder, create_encoder


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.parametrize("spec", [G722, OPUS, PCMU], ids=lambda spec: spec.name)
def test_encoders_and_decoders_start_no_thread(spec: CodecSpec) -> None:
    before = threads()
    streams = []
    for _ in range(10):
        encoder, decoder = create_encoder(spec), create_decoder(spec)
        for _ in range(3):
            decoder.decode(encoder.encode(bytes(spec.samples_per_frame * 2)))
        decoder.conceal(spec.samples_per_frame)
        streams.append((encoder, decoder))
    assert threads() == before
