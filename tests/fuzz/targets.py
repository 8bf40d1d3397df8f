"""Fuzz targets: every parser that takes bytes or text from the network, with a hypothesis
strategy of well-formed inputs and the exceptions the parser is documented to raise.

Every target takes one byte string (a sequence of datagrams or events is framed by `frame`), so
the same inputs serve hypothesis (`test_parsers.py`, a bounded sample in `make test`) and the
mutation fuzzer (`mutator.py`, `make fuzz`: 10^6 inputs per target). The strategies build valid
messages with the project's own builders; `mutated` and the fuzzer then break them. Any
exception outside a target's `expected` tuple is a bug.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from hypothesis import strategies as st

from callbridge.media import rtcp
from callbridge.media.jitter import JitterBuffer
from callbridge.media.rtp import RtpError, RtpExtension, build_rtp, parse_rtp, parse_rtp_datagram
from callbridge.media.rtp_stream import RtpStream
from callbridge.media.sdp import SdpError, answer_codecs, parse_sdp
from callbridge.media.telephone_event import (
    DtmfDetector,
    TelephoneEventError,
    build_telephone_event,
    parse_telephone_event,
)
from callbridge.rtvbp import babelforce_v1, demo_v1
from callbridge.rtvbp.catalog import decode_payload, encode_payload
from callbridge.rtvbp.envelope import decode_frame, encode_frame
from callbridge.rtvbp.errors import EnvelopeError, PayloadError
from callbridge.server import control_messages
from callbridge.server.control_messages import Request, decode_params, parse_request
from callbridge.server.control_methods import METHODS
from callbridge.server.errors import ControlError


@dataclass(frozen=True)
class Target:
    name: str
    inputs: st.SearchStrategy[bytes]
    """Well-formed inputs (before mutation)."""
    run: Callable[[bytes], object]
    expected: tuple[type[BaseException], ...]
    """What the parser raises for bad input by contract; anything else is a bug."""

    def check(self, data: bytes) -> None:
        try:
            self.run(data)
        except self.expected:
            pass


def frame(records: list[bytes]) -> bytes:
    """Records with 2-byte length prefixes (several datagrams as one fuzz input)."""
    return b"".join(len(record).to_bytes(2, "big") + record for record in records)


def unframe(data: bytes) -> list[bytes]:
    """The records of `frame`; a broken length just ends the last record early."""
    records, offset = [], 0
    while offset + 2 <= len(data):
        size = int.from_bytes(data[offset : offset + 2], "big")
        records.append(data[offset + 2 : offset + 2 + size])
        offset += 2 + size
    return records


# --- generic mutation -------------------------------------------------------------------------

_edits = st.lists(st.tuples(st.integers(0, 1500), st.integers(0, 255)), max_size=6)


def mutated(valid: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """`valid` messages with a few bytes overwritten, then cut or extended."""

    def apply(item: tuple[bytes, list[tuple[int, int]], int, bytes]) -> bytes:
        data, edits, cut, tail = item
        buffer = bytearray(data)
        for position, value in edits:
            if buffer:
                buffer[position % len(buffer)] = value
        if cut:
            del buffer[len(buffer) - min(cut, len(buffer)) :]
        return bytes(buffer) + tail

    return st.tuples(valid, _edits, st.integers(0, 12), st.binary(max_size=8)).map(apply)


def noisy(valid: st.SearchStrategy[bytes], max_size: int = 300) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=max_size), valid, mutated(valid))


u8, u16, u32 = st.integers(0, 0xFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)

# --- RTP ----------------------------------------------------------------------------------------

_extensions = st.none() | st.builds(
    RtpExtension,
    u16,
    st.integers(0, 6).flatmap(lambda words: st.binary(min_size=4 * words, max_size=4 * words)),
)
rtp_packets = st.builds(
    build_rtp,
    st.integers(0, 127),
    u16,
    u32,
    u32,
    st.binary(max_size=200),
    marker=st.booleans(),
    csrcs=st.lists(u32, max_size=15).map(tuple),
    extension=_extensions,
    padding=st.sampled_from([0, 0, 1, 4, 255]),
)
rtp_datagrams = noisy(rtp_packets)


def _rtp(data: bytes) -> None:
    parse_rtp(data)
    parse_rtp_datagram(data)


def _rtp_stream(data: bytes) -> None:
    """The whole inbound path of an RTP endpoint's stream, RTCP demux and stats included."""
    datagrams = unframe(data)
    stream = RtpStream(0.0, unix_offset=1.7e9, transmit_rtp=_sink, transmit_rtcp=_sink)
    stream.set_remote(("127.0.0.1", 4000), None, rtcp_mux=False)
    stream.set_clock_rate(8000, event_payload_type=101)
    for index, datagram in enumerate(datagrams):
        stream.receive_rtp(datagram, ("127.0.0.1", 4000 + index % 2), index * 0.02)
        stream.tick(index * 0.02)
    stream.stats(len(datagrams) * 0.02)


def _sink(datagram: bytes, address: tuple[str, int]) -> None:
    pass


def _jitter(data: bytes) -> None:
    """4-byte records: sequence (16 bits), SSRC (mod 3), tick delay (ms)."""
    buffer: JitterBuffer[int] = JitterBuffer(depth_packets=3, max_delay_ms=60.0)
    for index in range(len(data) // 4):
        sequence, ssrc, step = (
            int.from_bytes(data[4 * index : 4 * index + 2], "big"),
            *data[4 * index + 2 : 4 * index + 4],
        )
        buffer.push(sequence, index, index * 0.02, ssrc % 3)
        buffer.tick(index * 0.02 + step / 1000)


jitter_pushes = st.lists(
    st.tuples(u16, st.integers(0, 2), st.integers(0, 255)).map(
        lambda item: item[0].to_bytes(2, "big") + bytes(item[1:])
    ),
    max_size=40,
).map(b"".join)


# --- RTCP ---------------------------------------------------------------------------------------

_blocks = st.lists(
    st.builds(rtcp.ReportBlock, u32, u8, st.integers(0, 0x7FFFFF), u32, u32, u32, u32),
    max_size=3,
)
_unknown_rtcp = st.tuples(st.integers(192, 223), st.integers(0, 31), st.binary(max_size=12)).map(
    lambda item: (
        bytes([0x80 | item[1], item[0]])
        + ((len(item[2]) + 3) // 4).to_bytes(2, "big")
        + item[2].ljust((len(item[2]) + 3) // 4 * 4, b"\0")
    )
)
_rtcp_parts = st.one_of(
    st.builds(
        rtcp.build_sender_report,
        u32,
        st.integers(0, 2**64 - 1),
        u32,
        u32,
        u32,
        _blocks,
    ),
    st.builds(rtcp.build_receiver_report, u32, _blocks),
    st.builds(rtcp.build_source_description, u32, st.text(max_size=20)),
    st.builds(rtcp.build_goodbye, st.lists(u32, max_size=3), st.none() | st.text(max_size=20)),
    _unknown_rtcp,
)
rtcp_datagrams = noisy(st.lists(_rtcp_parts, min_size=1, max_size=4).map(b"".join), 200)

# --- SDP ----------------------------------------------------------------------------------------

_small = st.integers(-2, 70000).map(str) | st.text(max_size=6)
_sdp_lines = st.one_of(
    st.sampled_from(
        ["v=0", "s=-", "t=0 0", "a=sendrecv", "a=recvonly", "a=inactive", "a=rtcp-mux"]
    ),
    st.builds("o=- {} {} IN IP4 127.0.0.1".format, _small, _small),
    st.builds("c=IN {} {}".format, st.sampled_from(["IP4", "IP6", "X"]), st.text(max_size=16)),
    st.builds(
        "m={} {} {} {}".format,
        st.sampled_from(["audio", "video", "application"]),
        _small,
        st.sampled_from(["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "x"]),
        st.lists(_small, max_size=5).map(" ".join),
    ),
    st.builds(
        "a=rtpmap:{} {}/{}{}".format,
        _small,
        st.sampled_from(["PCMU", "PCMA", "G722", "opus", "telephone-event", "x"]),
        _small,
        st.sampled_from(["", "/2", "/x"]),
    ),
    st.builds("a=fmtp:{} {}".format, _small, st.text(max_size=20)),
    st.builds("a={}:{}".format, st.sampled_from(["ptime", "maxptime", "rtcp"]), _small),
    st.builds(
        "a=crypto:{} {} inline:{}".format, _small, st.text(max_size=24), st.text(max_size=44)
    ),
    st.text(max_size=40),
)
sdp_texts = st.one_of(
    st.lists(_sdp_lines, max_size=14).flatmap(
        lambda lines: st.sampled_from(["\r\n", "\n", "\r"]).map(lambda end: end.join(lines))
    ),
    st.binary(max_size=300),
).map(lambda text: text if isinstance(text, bytes) else text.encode())


def _sdp(text: bytes) -> None:
    description = parse_sdp(text)
    answer_codecs(description)
    if description.crypto is not None:
        description.crypto.master_key()


# --- RFC 4733 -------------------------------------------------------------------------------

_events = st.builds(build_telephone_event, u8, st.booleans(), st.integers(0, 63), u16)
event_payloads = noisy(_events, 12)
event_streams = st.lists(
    st.tuples(u32, u8, event_payloads).map(
        lambda item: item[0].to_bytes(4, "big") + bytes([item[1]]) + item[2]
    ),
    max_size=30,
).map(frame)


def _events_feed(data: bytes) -> None:
    """Records: RTP timestamp (4 bytes), time step (10 ms units, top bit: marker), payload."""
    detector = DtmfDetector(8000)
    now = 0.0
    for record in unframe(data):
        header, payload = record[:5], record[5:]
        timestamp = int.from_bytes(header[:4], "big")
        step = header[4] if len(header) == 5 else 0
        now += (step & 0x7F) / 100
        detector.feed(payload, timestamp, now, step > 0x7F)
        if len(payload) >= 4:
            parse_telephone_event(payload)


# --- JSON: control messages, RTVBP envelopes and payloads ------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.uuids().map(str),
)


_any_keys = st.text(max_size=10)


def json_values(keys: st.SearchStrategy[str] = _any_keys) -> st.SearchStrategy[Any]:
    return st.recursive(
        _scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5)
        ),
        max_leaves=16,
    )


def _json_text(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _field_names(struct_types: list[type[Any]]) -> list[str]:
    names = {"session_id", "endpoint_id", "id", "version"}
    for struct_type in struct_types:
        if isinstance(struct_type, type) and issubclass(struct_type, msgspec.Struct):
            names.update(field.encode_name for field in msgspec.structs.fields(struct_type))
    return sorted(names)


PARAMS_TYPES: list[type[msgspec.Struct]] = sorted(
    (
        value
        for name, value in vars(control_messages).items()
        if name.endswith("Params") and isinstance(value, type) and issubclass(value, msgspec.Struct)
    ),
    key=lambda value: value.__name__,
)
_control_keys = st.sampled_from(_field_names(list(PARAMS_TYPES))) | st.text(max_size=8)
_control_requests = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=8) | _scalars,
        "method": st.sampled_from(sorted(METHODS)) | _scalars,
        "params": st.dictionaries(_control_keys, json_values(_control_keys), max_size=6)
        | json_values(),
    },
)
control_frames = st.tuples(
    st.integers(0, 255), st.one_of(_control_requests.map(_json_text), st.text(max_size=60))
).map(lambda item: bytes([item[0]]) + item[1].encode())


def _control(data: bytes) -> None:
    """First byte: which params type the method decodes; the rest: the text frame."""
    request = parse_request(data[1:].decode(errors="replace"))
    if isinstance(request, Request) and data:
        decode_params(request.params, PARAMS_TYPES[data[0] % len(PARAMS_TYPES)])


PAYLOAD_TYPES: list[type[Any]] = []
_operation_names: set[str] = set()
for _catalog in (babelforce_v1.CATALOG, demo_v1.CATALOG):
    for _operation in _catalog.operations.values():
        PAYLOAD_TYPES += [_operation.params_type, _operation.result_type]
    PAYLOAD_TYPES += [event.data_type for event in _catalog.events.values()]
    _operation_names.update(_catalog.operations, _catalog.events)
_payload_keys = st.sampled_from(_field_names(PAYLOAD_TYPES)) | st.text(max_size=8)
_payload_json = (
    st.dictionaries(_payload_keys, json_values(_payload_keys), max_size=8) | json_values()
)

_names = st.sampled_from(sorted(_operation_names)) | st.text(min_size=1, max_size=8)
_ids = st.text(min_size=1, max_size=8) | _scalars
_error_bodies = st.fixed_dictionaries(
    {"code": st.integers(-3, 600) | _scalars, "message": st.text(max_size=8) | _scalars},
    optional={"any": json_values()},
)
_envelopes = st.one_of(
    st.fixed_dictionaries(
        {"version": st.just("1"), "id": _ids, "method": _names}, optional={"params": _payload_json}
    ),
    st.fixed_dictionaries(
        {"version": st.just("1"), "id": _ids, "event": _names}, optional={"data": _payload_json}
    ),
    st.fixed_dictionaries(
        {"version": st.just("1"), "response": _ids},
        optional={"result": _payload_json, "error": _error_bodies | _scalars},
    ),
    st.dictionaries(
        st.sampled_from(["version", "id", "event", "method", "response", "params", "error"]),
        _scalars,
    ),
)
rtvbp_frames = st.one_of(
    _envelopes.map(_json_text)
    .map(str.encode)
    .flatmap(lambda data: st.just(data) | mutated(st.just(data))),
    st.binary(max_size=120),
)


def _envelope(data: bytes) -> None:
    frame = decode_frame(data)
    decode_frame(encode_frame(frame))


rtvbp_payloads = st.tuples(
    st.integers(0, 255), _payload_json.map(_json_text).map(str.encode) | st.binary(max_size=60)
).map(lambda item: bytes([item[0]]) + item[1])


def _payload(data: bytes) -> None:
    """First byte: which catalog payload type; the rest: its raw JSON."""
    if data:
        payload_type = PAYLOAD_TYPES[data[0] % len(PAYLOAD_TYPES)]
        encode_payload(decode_payload(payload_type, data[1:]))


TARGETS: tuple[Target, ...] = (
    Target("rtp", rtp_datagrams, _rtp, (RtpError,)),
    Target(
        "rtp_stream",
        st.lists(noisy(rtp_packets) | rtcp_datagrams, max_size=12).map(frame),
        _rtp_stream,
        (),
    ),
    Target("jitter", jitter_pushes, _jitter, ()),
    Target("rtcp", rtcp_datagrams, rtcp.parse_rtcp, (rtcp.RtcpError,)),
    Target("sdp", sdp_texts, _sdp, (SdpError,)),
    Target("telephone_event", event_streams, _events_feed, (TelephoneEventError,)),
    Target("control", control_frames, _control, (ControlError,)),
    Target("rtvbp_envelope", rtvbp_frames, _envelope, (EnvelopeError,)),
    Target("rtvbp_payload", rtvbp_payloads, _payload, (PayloadError,)),
)
