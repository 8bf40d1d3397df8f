"""classic.v1 envelope codec cost per control message (µs/op), against stdlib json on one frame.

Prints figures only; never a pass/fail test. Run ``.venv/bin/python benchmarks/rtvbp_envelope.py``.
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable
from typing import Any

from callbridge.rtvbp.envelope import Event, Frame, Request, decode_frame, encode_frame

DTMF_EVENT = Event(
    id="V1StGXR8_Z5jdHi6B-myT",
    event="dtmf",
    data=b'{"seq":7,"pressed_at":1700000000000,"released_at":1700000000120,"digit":"5"}',
)
INITIALIZE_REQUEST = Request(
    id="V1StGXR8_Z5jdHi6B-myU",
    method="session.initialize",
    params=(
        b'{"application":{"id":"app-1"},"call":{"id":"call-1","session_id":"session-1",'
        b'"from":"+12025550100","to":"+12025550101"},"audio_codec_offerings":[{"id":"L16/8000/1",'
        b'"name":"L16","sample_rate":8000,"bit_depth":16,"channels":1}],"metadata":null}'
    ),
)


def per_operation_us(operation: Callable[[], Any], repeat: int = 7) -> float:
    """Best-of-``repeat`` mean time of one call, in microseconds."""
    timer = timeit.Timer(operation)
    loops, _ = timer.autorange()
    return min(timer.repeat(repeat=repeat, number=loops)) / loops * 1e6


def report(name: str, frame: Frame) -> None:
    wire = encode_frame(frame)
    as_dict = json.loads(wire)
    text = wire.decode()
    encode_us = per_operation_us(lambda: encode_frame(frame))
    decode_us = per_operation_us(lambda: decode_frame(wire))
    decode_text_us = per_operation_us(lambda: decode_frame(text))
    json_encode_us = per_operation_us(
        lambda: json.dumps(as_dict, separators=(",", ":"), ensure_ascii=False).encode()
    )
    json_decode_us = per_operation_us(lambda: json.loads(wire))
    print(f"{name} ({len(wire)} bytes)")
    print(
        f"  encode_frame        {encode_us:6.2f} µs/op"
        f"   stdlib json.dumps {json_encode_us:6.2f} µs/op"
        f"   ratio {json_encode_us / encode_us:5.2f}x"
    )
    print(
        f"  decode_frame(bytes) {decode_us:6.2f} µs/op"
        f"   stdlib json.loads {json_decode_us:6.2f} µs/op"
        f"   ratio {json_decode_us / decode_us:5.2f}x"
    )
    print(f"  decode_frame(str)   {decode_text_us:6.2f} µs/op")


def main() -> None:
    report("dtmf event", DTMF_EVENT)
    report("session.initialize request", INITIALIZE_REQUEST)


if __name__ == "__main__":
    main()
