"""SDP for plain RTP audio (RFC 8866 subset): lenient parser, offer/answer writer, codec choice.

The parser never raises on text: garbage gives a neutral description (no address, no codecs) and
the caller decides what to refuse (a WebRTC offer, an answer without address or shared codecs).
It is linear in the input and keeps at most 32 payload types, rtpmaps and fmtps. Size limits are
the caller's. The writer produces the layout rtpbridge writes (session lines, one audio section,
rtpmap/fmtp per codec, crypto, sendrecv, rtcp-mux, ptime), under our product name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from callbridge.media.errors import MediaError
from callbridge.media.srtp import DEFAULT_SUITE, SUITES, SrtpKey

__all__ = [
    "DEFAULT_OFFER_CODECS",
    "G722",
    "MAX_PAYLOAD_TYPES",
    "OPUS",
    "PCMA",
    "PCMU",
    "SUPPORTED_CODEC_NAMES",
    "TELEPHONE_EVENT",
    "Codec",
    "Crypto",
    "SdpError",
    "SessionDescription",
    "answer_codecs",
    "codec_lines",
    "offer_codecs",
    "parse_sdp",
    "reduce_answer_codecs",
    "send_codec",
    "telephone_event_codec",
    "write_sdp",
]

MAX_PAYLOAD_TYPES: Final = 32
"""How many PTs, rtpmaps and fmtps of the audio section are kept (rtpbridge's limit)."""
_PRODUCT: Final = "callbridge"
_DIRECTIONS: Final = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
_TELEPHONE_EVENT_NAME: Final = "telephone-event"
_FALLBACK_TELEPHONE_EVENT_PT: Final = 101


class SdpError(MediaError, ValueError):
    """Values that cannot be written into an SDP."""


class Codec(msgspec.Struct, frozen=True):
    """One payload format: the encoding name as SDP spells it, PT, RTP clock, channels, fmtp.

    Names compare case-insensitively (`key`); the engine joins codecs to encoders by name.
    """

    name: str
    payload_type: int
    clock_rate: int
    channels: int = 1
    fmtp: str | None = None

    @property
    def key(self) -> str:
        """The lower-cased name, for matching."""
        return self.name.lower()

    @property
    def is_telephone_event(self) -> bool:
        return self.name.lower() == _TELEPHONE_EVENT_NAME


PCMU: Final = Codec("PCMU", 0, 8000)
PCMA: Final = Codec("PCMA", 8, 8000)
G722: Final = Codec("G722", 9, 8000)
OPUS: Final = Codec("opus", 111, 48000, 2, "minptime=10;useinbandfec=1;stereo=0;sprop-stereo=0")
TELEPHONE_EVENT: Final = Codec(_TELEPHONE_EVENT_NAME, 101, 8000, 1, "0-16")
DEFAULT_OFFER_CODECS: Final = (PCMU, PCMA, G722, OPUS)
SUPPORTED_CODEC_NAMES: Final = ("PCMU", "PCMA", "G722", "opus")

_CANONICAL: Final = {codec.key: codec for codec in DEFAULT_OFFER_CODECS}
# RTP clocks accepted per name; G.722 is sometimes offered at 16000 (wrongly: RFC 3551 section
# 4.5.2 keeps its RTP clock at 8000).
_ACCEPTED_CLOCKS: Final = {
    "pcmu": (8000,),
    "pcma": (8000,),
    "g722": (8000, 16000),
    "opus": (48000,),
}
# Static PTs understood without an rtpmap (RFC 3551 table 4).
_STATIC: Final = {
    0: Codec("PCMU", 0, 8000),
    3: Codec("GSM", 3, 8000),
    4: Codec("G723", 4, 8000),
    8: Codec("PCMA", 8, 8000),
    9: Codec("G722", 9, 8000),
    18: Codec("G729", 18, 8000),
}


class Crypto(msgspec.Struct, frozen=True):
    """An SDES `a=crypto` line (RFC 4568) of a supported suite; the key stays base64.

    Decoding is deferred to `key()` so a bad key fails at SRTP setup, as in rtpbridge.
    """

    tag: int
    key_base64: str
    suite: str = DEFAULT_SUITE

    def key(self) -> SrtpKey:
        """The master key and salt; SrtpError (a ValueError) on bad base64 or a short key."""
        return SrtpKey.from_base64(self.suite, self.key_base64)


class SessionDescription(msgspec.Struct, frozen=True):
    """What matters in a remote SDP: the first `m=audio` section and the WebRTC markers.

    `connection_address` is the media-level `c=` of that section, else the session-level one.
    `codecs` follow the m-line order: rtpmap entries, or static PTs known by number.
    `direction` is parsed but, as in rtpbridge, routing ignores it.
    """

    has_audio: bool = False
    connection_address: str | None = None
    port: int = 0
    protocol: str = ""
    payload_types: tuple[int, ...] = ()
    codecs: tuple[Codec, ...] = ()
    crypto: Crypto | None = None
    unsupported_crypto_suites: tuple[str, ...] = ()
    """Suites of `a=crypto` lines that were left out (unknown to us), in order."""
    rtcp_mux: bool = False
    rtcp_port: int | None = None
    direction: str = "sendrecv"
    ptime_ms: int | None = None
    maxptime_ms: int | None = None
    """`a=maxptime`: the longest packet the peer takes, ms (RFC 4566 section 6)."""
    webrtc: bool = False

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """Where to send RTP; None when there is no `c=` or the port is 0."""
        if self.connection_address is None or self.port == 0:
            return None
        return self.connection_address, self.port

    @property
    def srtp(self) -> bool:
        return self.crypto is not None

    @property
    def secure_profile(self) -> bool:
        """The m-line asks for SRTP (`RTP/SAVP` or `RTP/SAVPF`)."""
        return self.protocol.upper() in ("RTP/SAVP", "RTP/SAVPF")

    @property
    def osrtp(self) -> bool:
        """Opportunistic SRTP: a crypto line under plain `RTP/AVP`."""
        return self.crypto is not None and self.protocol.upper() == "RTP/AVP"


def _small_int(text: str, maximum: int) -> int | None:
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    value = int(text)
    return value if value <= maximum else None


def _parse_rtpmap(value: str) -> tuple[int, Codec] | None:
    number, _, encoding = value.strip().partition(" ")
    payload_type = _small_int(number, 127)
    parts = encoding.strip().split("/", 3)
    if payload_type is None or len(parts) < 2 or not parts[0]:
        return None
    clock_rate = _small_int(parts[1].strip(), 0xFFFFFFFF)
    channels = _small_int(parts[2].strip(), 255) if len(parts) > 2 else 1
    if not clock_rate or not channels:
        return None
    return payload_type, Codec(parts[0].strip(), payload_type, clock_rate, channels)


def _parse_crypto(value: str) -> Crypto | None:
    fields = value.split(None, 3)
    if len(fields) < 3 or fields[1].upper() not in SUITES:
        return None
    tag = _small_int(fields[0], 999_999_999)
    key_parameter = fields[2].split(";", 1)[0]
    method, _, key = key_parameter.partition(":")
    if tag is None or method.lower() != "inline" or not key:
        return None
    return Crypto(tag, key.split("|", 1)[0], fields[1].upper())


def _choose_crypto(current: Crypto | None, line: Crypto | None) -> Crypto | None:
    """The line to answer: the last AES_CM_128_HMAC_SHA1_80 one (what rtpbridge takes), else
    the first line of another supported suite (the offerer's preference, RFC 4568)."""
    if line is None:
        return current
    if current is None or line.suite == DEFAULT_SUITE:
        return line
    return current


def parse_sdp(text: str | bytes) -> SessionDescription:
    """Parse a remote offer or answer leniently (CRLF or LF lines); never raises on content."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8", "replace")
    section = "session"  # "session", "audio" (the first m=audio) or "other"
    has_audio = webrtc = rtcp_mux = False
    session_address: str | None = None
    media_address: str | None = None
    port = 0
    protocol = ""
    payload_types: list[int] = []
    rtpmaps: dict[int, Codec] = {}
    fmtps: dict[int, str] = {}
    crypto: Crypto | None = None
    unsupported_suites: list[str] = []
    rtcp_port: int | None = None
    session_direction: str | None = None
    media_direction: str | None = None
    ptime_ms: int | None = None
    maxptime_ms: int | None = None
    for raw_line in text.split("\n"):
        line = raw_line.strip()
        kind = line[:2]
        if kind == "a=":
            name, _, value = line[2:].partition(":")
            name = name.strip().lower()
            if name in ("fingerprint", "ice-ufrag"):
                webrtc = True
            elif section == "audio":
                if name == "rtpmap":
                    entry = _parse_rtpmap(value)
                    if entry and entry[0] not in rtpmaps and len(rtpmaps) < MAX_PAYLOAD_TYPES:
                        rtpmaps[entry[0]] = entry[1]
                elif name == "fmtp":
                    number, _, parameters = value.strip().partition(" ")
                    payload_type = _small_int(number, 127)
                    if (
                        payload_type is not None
                        and payload_type not in fmtps
                        and len(fmtps) < MAX_PAYLOAD_TYPES
                    ):
                        fmtps[payload_type] = parameters.strip()
                elif name == "crypto":
                    crypto_line = _parse_crypto(value)
                    crypto = _choose_crypto(crypto, crypto_line)
                    suite = value.split(None, 2)[1:2]
                    if (
                        crypto_line is None
                        and suite
                        and suite[0].upper() not in SUITES
                        and len(unsupported_suites) < MAX_PAYLOAD_TYPES
                    ):
                        unsupported_suites.append(suite[0][:64])
                elif name == "rtcp-mux":
                    rtcp_mux = True
                elif name == "rtcp":
                    rtcp_port = _small_int(value.strip().split(" ", 1)[0], 65535)
                elif name in _DIRECTIONS:
                    media_direction = name
                elif name == "ptime":
                    ptime_ms = _small_int(value.strip().split(".", 1)[0], 10_000) or ptime_ms
                elif name == "maxptime":
                    maxptime_ms = _small_int(value.strip().split(".", 1)[0], 10_000) or maxptime_ms
            elif section == "session" and name in _DIRECTIONS:
                session_direction = name
        elif kind == "m=":
            fields = line[2:].split(None, 3)
            if has_audio or not fields or fields[0].lower() != "audio":
                section = "other"
                continue
            section = "audio"
            has_audio = True
            if len(fields) > 1:
                port = _small_int(fields[1].split("/", 1)[0], 65535) or 0
            protocol = fields[2] if len(fields) > 2 else ""
            for token in fields[3].split() if len(fields) > 3 else ():
                payload_type = _small_int(token, 127)
                if payload_type is not None and payload_type not in payload_types:
                    payload_types.append(payload_type)
                    if len(payload_types) == MAX_PAYLOAD_TYPES:
                        break
        elif kind == "c=" and section != "other":
            fields = line[2:].split(None, 3)
            if (
                len(fields) >= 3
                and fields[0].upper() == "IN"
                and fields[1].upper()
                in (
                    "IP4",
                    "IP6",
                )
            ):
                address = fields[2].split("/", 1)[0]
                if section == "session":
                    session_address = address
                else:
                    media_address = address
    codecs = []
    for payload_type in payload_types:
        codec = rtpmaps.get(payload_type) or _STATIC.get(payload_type)
        if codec is not None:
            fmtp = fmtps.get(payload_type)
            codecs.append(codec if fmtp is None else msgspec.structs.replace(codec, fmtp=fmtp))
    return SessionDescription(
        has_audio=has_audio,
        connection_address=media_address or session_address,
        port=port,
        protocol=protocol,
        payload_types=tuple(payload_types),
        codecs=tuple(codecs),
        crypto=crypto,
        unsupported_crypto_suites=tuple(unsupported_suites),
        rtcp_mux=rtcp_mux,
        rtcp_port=rtcp_port,
        direction=media_direction or session_direction or "sendrecv",
        ptime_ms=ptime_ms,
        maxptime_ms=maxptime_ms,
        webrtc=webrtc,
    )


def _check_text(value: str, what: str) -> None:
    if not value or any(character in value for character in "\r\n\0 "):
        raise SdpError(f"{what} {value!r} is empty or contains spaces or line breaks")


def write_sdp(
    *,
    address: str,
    port: int,
    codecs: Sequence[Codec],
    session_id: int,
    version: int = 1,
    crypto: Crypto | None = None,
    ptime_ms: int = 20,
) -> str:
    """An offer or answer in the layout of the module docstring, CRLF line endings.

    `RTP/SAVP` when `crypto` is given (so an OSRTP offer gets an SAVP answer, like rtpbridge);
    always `a=sendrecv`, `a=rtcp-mux`. `IP6` when the address contains a colon.
    """
    _check_text(address, "address")
    if not 0 <= port <= 65535 or session_id < 0 or version < 0 or ptime_ms <= 0:
        raise SdpError("port, session id, version or ptime out of range")
    address_type = "IP6" if ":" in address else "IP4"
    profile = "RTP/AVP" if crypto is None else "RTP/SAVP"
    payload_types = " ".join(str(codec.payload_type) for codec in codecs)
    lines = [
        "v=0",
        f"o={_PRODUCT} {session_id} {version} IN {address_type} {address}",
        f"s={_PRODUCT}",
        f"c=IN {address_type} {address}",
        "t=0 0",
        f"m=audio {port} {profile} {payload_types}".rstrip(),
    ]
    lines += codec_lines(codecs)
    if crypto is not None:
        _check_text(crypto.key_base64, "crypto key")
        _check_text(crypto.suite, "crypto suite")
        lines.append(f"a=crypto:{crypto.tag} {crypto.suite} inline:{crypto.key_base64}")
    lines += ["a=sendrecv", "a=rtcp-mux", f"a=ptime:{ptime_ms}", ""]
    return "\r\n".join(lines)


def codec_lines(codecs: Sequence[Codec]) -> list[str]:
    """The rtpmap (and fmtp) attribute lines of `codecs`; SdpError for values SDP cannot hold."""
    lines = []
    for codec in codecs:
        _check_text(codec.name, "codec name")
        if not 0 <= codec.payload_type <= 127 or codec.clock_rate <= 0 or codec.channels <= 0:
            raise SdpError(f"bad codec {codec!r}")
        channels = f"/{codec.channels}" if codec.channels > 1 else ""
        lines.append(f"a=rtpmap:{codec.payload_type} {codec.name}/{codec.clock_rate}{channels}")
        if codec.fmtp:
            if "\r" in codec.fmtp or "\n" in codec.fmtp:
                raise SdpError("fmtp contains a line break")
            lines.append(f"a=fmtp:{codec.payload_type} {codec.fmtp}")
    return lines


def _telephone_event(payload_type: int, clock_rate: int) -> Codec:
    return Codec(_TELEPHONE_EVENT_NAME, payload_type, clock_rate, 1, TELEPHONE_EVENT.fmtp)


def answer_codecs(
    offered: SessionDescription | Sequence[Codec],
    supported: Iterable[str] = SUPPORTED_CODEC_NAMES,
) -> tuple[Codec, ...]:
    """Codecs for our answer: each supported offered codec in offer order with the offer's PT
    (first PT per name), then telephone-event.

    telephone-event takes the offer's PT and clock (preferring one at the first codec's clock),
    else PT 101 (or the first free dynamic PT) at the first codec's clock (8000 with none).
    The first codec is the send codec. Written with our canonical rtpmap and fmtp.
    """
    codecs = offered.codecs if isinstance(offered, SessionDescription) else offered
    wanted = {name.lower() for name in supported}
    chosen: list[Codec] = []
    for codec in codecs:
        key = codec.key
        canonical = _CANONICAL.get(key)
        if (
            canonical is None
            or key not in wanted
            or codec.clock_rate not in _ACCEPTED_CLOCKS[key]
            or any(existing.key == key for existing in chosen)
        ):
            continue
        chosen.append(msgspec.structs.replace(canonical, payload_type=codec.payload_type))
    primary_clock = chosen[0].clock_rate if chosen else 8000
    events = [codec for codec in codecs if codec.is_telephone_event]
    if events:
        matching = [codec for codec in events if codec.clock_rate == primary_clock]
        offered_event = (matching or events)[0]
        event = _telephone_event(offered_event.payload_type, offered_event.clock_rate)
    else:
        used = {codec.payload_type for codec in chosen}
        free = [number for number in range(96, 128) if number not in used]
        number = (
            _FALLBACK_TELEPHONE_EVENT_PT if _FALLBACK_TELEPHONE_EVENT_PT not in used else free[0]
        )
        event = _telephone_event(number, primary_clock)
    return (*chosen, event)


def offer_codecs(names: Iterable[str] | None = None) -> tuple[Codec, ...]:
    """Codecs for our offer with the default PTs (PCMU 0, PCMA 8, G722 9, opus 111, te 101).

    `names` filters case-insensitively and sets the order (unknown names are ignored; None means
    all four); telephone-event is always added at the first codec's clock.
    """
    if names is None:
        chosen = list(DEFAULT_OFFER_CODECS)
    else:
        chosen = []
        for name in names:
            codec = _CANONICAL.get(name.lower())
            if codec is not None and codec not in chosen:
                chosen.append(codec)
    clock_rate = chosen[0].clock_rate if chosen else 8000
    return (*chosen, _telephone_event(TELEPHONE_EVENT.payload_type, clock_rate))


def reduce_answer_codecs(
    answer: SessionDescription | Sequence[Codec], offered: Sequence[Codec]
) -> tuple[Codec, ...]:
    """The answer's codecs that we offered (matched by name), with the answer's PTs, in order."""
    codecs = answer.codecs if isinstance(answer, SessionDescription) else answer
    names = {codec.key for codec in offered}
    return tuple(codec for codec in codecs if codec.key in names)


def send_codec(codecs: Sequence[Codec]) -> Codec | None:
    """The first codec that is not telephone-event: what we send."""
    return next((codec for codec in codecs if not codec.is_telephone_event), None)


def telephone_event_codec(codecs: Sequence[Codec]) -> Codec | None:
    """The first telephone-event entry, if any."""
    return next((codec for codec in codecs if codec.is_telephone_event), None)
