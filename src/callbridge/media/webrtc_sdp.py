"""SDP for WebRTC audio: the ICE and DTLS attributes of an offer or answer, and our own SDP.

`parse_sdp` (callbridge.media.sdp) gives the codecs; `parse_webrtc` adds what WebRTC needs:
the ICE credentials, the DTLS fingerprint and setup role, and the mid of the audio section
(media-level values win over session-level ones). `write_webrtc_sdp` writes one bundled audio
section: ICE-lite with one host candidate, DTLS-SRTP (`UDP/TLS/RTP/SAVPF`), rtcp-mux, our SSRC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final

from callbridge.media.sdp import Codec, SdpError, codec_lines

__all__ = [
    "MAX_CANDIDATES",
    "MAX_SECTIONS",
    "SETUP_ROLES",
    "LocalWebRtc",
    "OfferedSection",
    "WebRtcParameters",
    "parse_candidates",
    "parse_webrtc",
    "write_webrtc_sdp",
]

SETUP_ROLES: Final = frozenset({"actpass", "active", "passive"})
MAX_SECTIONS: Final = 16
MAX_CANDIDATES: Final = 16
"""Candidates of the audio section that are kept (checked); the rest are ignored."""
"""m-sections of an offer that are kept (and answered); a voice offer has one."""
_PRODUCT: Final = "callbridge"
_TOKEN_CHARACTERS: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/-_.:#=~!"
)


@dataclass(frozen=True, slots=True)
class OfferedSection:
    """One m-section of an offer, as the answer must mirror it (others than ours: rejected)."""

    kind: str
    protocol: str
    format: str
    mid: str | None


@dataclass(frozen=True, slots=True)
class WebRtcParameters:
    """The WebRTC attributes of a remote SDP; a field is None when the SDP lacks it."""

    ice_ufrag: str | None = None
    ice_password: str | None = None
    fingerprint_algorithm: str | None = None
    fingerprint: str | None = None
    """Upper-case hex pairs separated by colons, as OpenSSL writes a digest."""
    setup: str | None = None
    mid: str | None = None
    ice_lite: bool = False
    sections: tuple[OfferedSection, ...] = ()
    """Every m-section in order (at most `MAX_SECTIONS`)."""
    audio_index: int | None = None
    """Which of `sections` is the audio one these attributes are from."""


def parse_webrtc(text: str) -> WebRtcParameters:
    """The WebRTC attributes of the session and of its first audio section; never raises."""
    session: dict[str, str] = {}
    audio: dict[str, str] = {}
    section: dict[str, str] | None = session
    sections: list[OfferedSection] = []
    audio_index: int | None = None
    for raw_line in text.split("\n"):
        line = raw_line.strip()
        if line.startswith("m="):
            fields = line[2:].split()
            kind = fields[0].lower() if fields else ""
            is_ours = kind == "audio" and audio_index is None
            if is_ours:
                audio_index = len(sections)
            section = audio if is_ours else None
            if len(sections) < MAX_SECTIONS:
                protocol = fields[2] if len(fields) > 2 else "RTP/AVP"
                sections.append(OfferedSection(kind, protocol, " ".join(fields[3:4]) or "0", None))
        elif line.startswith("a=") and sections and line[2:6].lower() == "mid:":
            if sections[-1].mid is None:
                sections[-1] = replace(sections[-1], mid=line[6:].strip())
        if line.startswith("a=") and section is not None:
            name, _, value = line[2:].partition(":")
            section.setdefault(name.strip().lower(), value.strip())
    merged = {**session, **audio}
    algorithm = fingerprint = None
    if "fingerprint" in merged:
        algorithm, _, value = merged["fingerprint"].partition(" ")
        algorithm = algorithm.lower() or None
        fingerprint = value.strip().upper() or None
    setup = merged.get("setup", "").lower()
    return WebRtcParameters(
        ice_ufrag=merged.get("ice-ufrag") or None,
        ice_password=merged.get("ice-pwd") or None,
        fingerprint_algorithm=algorithm,
        fingerprint=fingerprint,
        setup=setup if setup in SETUP_ROLES else None,
        mid=audio.get("mid") or None,
        ice_lite="ice-lite" in session,
        sections=tuple(sections),
        audio_index=audio_index,
    )


def parse_candidates(text: str) -> list[tuple[str, int]]:
    """(address, port) of the UDP RTP candidates of the first audio section, in SDP order.

    Only component 1 over UDP counts (rtcp-mux); lines that do not parse are skipped, and
    unresolved mDNS names (``*.local``) too, since nothing here resolves them.
    """
    candidates: list[tuple[str, int]] = []
    in_audio = seen_audio = False
    for raw_line in text.split("\n"):
        line = raw_line.strip()
        if line.startswith("m="):
            in_audio = not seen_audio and line[2:].split(" ", 1)[0].lower() == "audio"
            seen_audio = seen_audio or in_audio
        elif in_audio and line.startswith("a=candidate:"):
            fields = line[12:].split()
            if len(fields) < 6 or fields[1] != "1" or fields[2].lower() != "udp":
                continue
            address, port = fields[4], fields[5]
            if not port.isdigit() or not 0 < int(port) <= 65535 or address.endswith(".local"):
                continue
            candidates.append((address, int(port)))
            if len(candidates) == MAX_CANDIDATES:
                break
    return candidates


def _check_token(value: str, what: str) -> None:
    if not value or len(value) > 256 or not set(value) <= _TOKEN_CHARACTERS:
        raise SdpError(f"{what} {value!r} is not a plain SDP token")


@dataclass(frozen=True, slots=True)
class LocalWebRtc:
    """Our side of the SDP: credentials, fingerprint, role, media identity."""

    ice_ufrag: str
    ice_password: str
    fingerprint: str
    """SHA-256 digest, upper-case hex pairs with colons."""
    setup: str
    ssrc: int
    cname: str


def write_webrtc_sdp(
    *,
    address: str,
    port: int,
    codecs: Sequence[Codec],
    local: LocalWebRtc,
    session_id: int,
    version: int = 1,
    mid: str = "0",
    direction: str = "sendrecv",
    ptime_ms: int = 20,
    offered: Sequence[OfferedSection] = (),
    audio_index: int = 0,
    ice_lite: bool = True,
) -> str:
    """One bundled audio section (CRLF line endings) with our host candidate on `address`.

    `ice_lite=False` for an offerer that runs the checks itself (a full agent toward an
    ICE-lite answerer).

    In an answer, `offered` are the offer's m-sections and `audio_index` the one we take; the
    others are answered rejected (port 0), in their places, as offer/answer requires.
    """
    for value, what in (
        (address, "address"),
        (local.ice_ufrag, "ice-ufrag"),
        (local.ice_password, "ice-pwd"),
        (local.fingerprint, "fingerprint"),
        (local.cname, "cname"),
        (mid, "mid"),
    ):
        _check_token(value, what)
    if local.setup not in SETUP_ROLES or not 0 < port <= 65535:
        raise SdpError("bad setup role or port")
    address_type = "IP6" if ":" in address else "IP4"
    payload_types = " ".join(str(codec.payload_type) for codec in codecs)
    lines = [
        "v=0",
        f"o={_PRODUCT} {session_id} {version} IN {address_type} {address}",
        f"s={_PRODUCT}",
        "t=0 0",
        f"a=group:BUNDLE {mid}",
        *(["a=ice-lite"] if ice_lite else []),
        "a=msid-semantic: WMS callbridge",
    ]
    rejected = [section for index, section in enumerate(offered) if index != audio_index]
    for section in rejected[:audio_index]:
        lines += _rejected(section, address_type, address)
    lines += [
        f"m=audio {port} UDP/TLS/RTP/SAVPF {payload_types}".rstrip(),
        f"c=IN {address_type} {address}",
        f"a=mid:{mid}",
        f"a=ice-ufrag:{local.ice_ufrag}",
        f"a=ice-pwd:{local.ice_password}",
        f"a=fingerprint:sha-256 {local.fingerprint}",
        f"a=setup:{local.setup}",
        f"a=candidate:1 1 udp 2130706431 {address} {port} typ host",
        "a=end-of-candidates",
        f"a={direction}",
        "a=rtcp-mux",
        f"a=ptime:{ptime_ms}",
    ]
    lines += codec_lines(codecs)
    lines += [
        f"a=msid:callbridge audio-{local.ssrc:08x}",
        f"a=ssrc:{local.ssrc} cname:{local.cname}",
    ]
    for section in rejected[audio_index:]:
        lines += _rejected(section, address_type, address)
    return "\r\n".join([*lines, ""])


def _rejected(section: OfferedSection, address_type: str, address: str) -> list[str]:
    for value, what in (
        (section.kind, "media"),
        (section.protocol, "protocol"),
        (section.format, "format"),
    ):
        _check_token(value, what)
    lines = [
        f"m={section.kind} 0 {section.protocol} {section.format}",
        f"c=IN {address_type} {address}",
    ]
    if section.mid is not None:
        _check_token(section.mid, "mid")
        lines.append(f"a=mid:{section.mid}")
    return [*lines, "a=inactive"]
