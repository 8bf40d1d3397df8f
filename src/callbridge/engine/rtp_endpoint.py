"""A plain RTP endpoint: SDP offer/answer on top of an `RtpTransport`, and its media roles.

Inbound (hot path, `_on_packet`): telephone-event packets go to the DTMF detector and are
forwarded with each destination's event PT; audio is forwarded by header rewrite to
passthrough destinations and, only if some destination needs it decoded, pushed through the
jitter buffer (zero delay in order) and decoded once into the endpoint's `SourceChain`.
Outbound: `forward` (passthrough) and `deliver` (generated frames) stamp timestamps from the
endpoint's `OutputStream`; the transport adds our SSRC and sequence numbers.

Native forwarding (callbridge.engine.forwarding): a pure passthrough route (no decoding, no
recording tap, no SRTP on either side) is handed to the forwarding plane once its first packets
have gone through Python (latching, SSRC, probation, the timestamp offset): `_arm_native` gives
the destination a sender rule and the source a receiver rule. Whatever needs Python takes them
back first (callbridge.engine.forwarding.NativeLink), and `_native_released` brings the
endpoint's own figures (routed packets, output timeline, last inbound time) up to date.

SRTP (SDES): an offer with a=crypto, under RTP/SAVP or RTP/AVP (OSRTP), is answered with our
own key under RTP/SAVP, as rtpbridge does; `with_offer(srtp=True)` offers a key; the transport
then protects and unprotects every packet (`SdesKeys` decides which key serves which direction).
Inbound audio in a negotiated codec other than the first (send) codec is dropped on the decoded
path.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

from callbridge.engine.endpoint import Endpoint, EndpointHost
from callbridge.engine.errors import SESSION_GONE, EngineError, endpoint_error
from callbridge.engine.forwarding import NativeLink
from callbridge.engine.pipeline import OutputFormat
from callbridge.engine.routing import RouteMode, RoutingTable
from callbridge.engine.rtp_transport import RtpTransport
from callbridge.engine.sdes import SdesKeys
from callbridge.media import codecs as media_codecs
from callbridge.media import sdp
from callbridge.media.codecs import CodecSpec, Decoder, create_decoder, packet_duration_ms
from callbridge.media.errors import MediaError
from callbridge.media.jitter import JitterBuffer
from callbridge.media.opus import OPUS_FULL_BAND
from callbridge.media.pcm import SAMPLE_BYTES
from callbridge.media.rtp import RtpPacket
from callbridge.media.srtp import SUITES
from callbridge.media.telephone_event import DtmfDetector

__all__ = ["RtpEndpoint"]

_FALLBACK_EVENT_TYPES: Final = frozenset({101, 96, 126})
"""PTs taken as telephone-event when none was negotiated (the usual dynamic PTs for it)."""
_SUPPORTED: Final = ("PCMU", "PCMA", "G722", "opus")

logger = logging.getLogger(__name__)


def _media_spec(codec: sdp.Codec) -> CodecSpec | None:
    spec = media_codecs.codec_by_name(codec.name)
    if spec is None or codec.key == "l16":
        return None
    return spec.with_payload_type(codec.payload_type)


class RtpEndpoint(Endpoint):
    """An RTP/AVP leg with one port pair (see the module docstring)."""

    kind = "rtp"
    is_rtp = True
    watches_media = True
    has_periodic_work = True

    def __init__(self, host: EndpointHost, direction: str, state: str) -> None:
        super().__init__(host, direction, state)
        self.metrics = host.metrics
        self.transport: RtpTransport | None = None
        self.codecs: tuple[sdp.Codec, ...] = ()
        self._offered: tuple[sdp.Codec, ...] = ()
        self.send_spec: CodecSpec | None = None
        self._event_pt: int | None = None
        self._event_types: frozenset[int] = _FALLBACK_EVENT_TYPES
        self._format: OutputFormat | None = None
        self._decoder: Decoder | None = None
        self._jitter: JitterBuffer[RtpPacket] | None = None
        self._detector = DtmfDetector(8000)
        self._passthrough: tuple[tuple[RtpEndpoint, dict[int, int]], ...] = ()
        self._event_targets: tuple[RtpEndpoint, ...] = ()
        self._passthrough_source: str | None = None
        """The source whose packets this endpoint currently forwards by passthrough."""
        self._event_timestamps: dict[tuple[str, int], int] = {}
        self._decoding = False
        self._packet_tap: Callable[[RtpPacket, float], None] | None = None
        self._native_destinations: list[tuple[NativeLink, bytes]] = []
        """Where the plane may rewrite our peer's packets to, when every passthrough destination
        is in the plane; else empty."""
        self._packet_samples = 0
        """Samples of the last decoded packet: what a lost packet is concealed with."""
        self.sdes: SdesKeys | None = None
        """The SRTP keys while SRTP is active."""
        self._sdp_version = 1
        self._empty_payloads = 0

    # -- creation and negotiation --------------------------------------------------------------

    @classmethod
    async def from_offer(
        cls, host: EndpointHost, offer: sdp.SessionDescription, direction: str
    ) -> tuple[RtpEndpoint, str]:
        """Answer a remote offer; the endpoint is connected at once (no state event)."""
        if offer.secure_profile and offer.crypto is None:
            offered = ", ".join(offer.unsupported_crypto_suites) or "none"
            raise endpoint_error(
                f"{offer.protocol} offer without a supported a=crypto line (offered suites: "
                f"{offered}; supported: {', '.join(SUITES)})"
            )
        endpoint = cls(host, direction, "connected")
        await endpoint._open()
        try:
            if offer.crypto is not None:
                endpoint._secure(SdesKeys.answering(offer.crypto))
            endpoint._apply(sdp.answer_codecs(offer, _SUPPORTED), offer)
            return endpoint, endpoint._write(endpoint.codecs)
        except BaseException:
            endpoint.close()
            raise

    @classmethod
    async def with_offer(
        cls, host: EndpointHost, direction: str, names: list[str] | None, srtp: bool = False
    ) -> tuple[RtpEndpoint, str]:
        """Our offer (with a key if `srtp`); `connecting`, not routable until `accept_answer`."""
        endpoint = cls(host, direction, "connecting")
        await endpoint._open()
        try:
            if srtp:
                endpoint._secure(SdesKeys.offering())
            endpoint._offered = sdp.offer_codecs(names)
            return endpoint, endpoint._write(endpoint._offered)
        except BaseException:
            endpoint.close()
            raise

    async def _open(self) -> None:
        self.transport = transport = await self._open_transport()
        if transport.native is not None:
            transport.native.on_release = self._native_released
            transport.native.on_rearm = self._arm_native
        if not self.host.alive:
            self.transport.close()
            raise EngineError(SESSION_GONE, "Session has been destroyed")

    async def _open_transport(self) -> RtpTransport:
        """A port pair on `media_ip` (kinds with other transports override this)."""
        context = self.host.context
        return await RtpTransport.open(
            context.ports,
            context.config.media_ip,
            on_packet=self._on_packet,
            on_rtcp_bye=self._on_rtcp_bye,
            plane=context.forwarding_plane(),
        )

    def _write(self, codecs: tuple[sdp.Codec, ...]) -> str:
        assert self.transport is not None
        return sdp.write_sdp(
            address=self.host.context.config.media_ip,
            port=self.transport.local_port,
            codecs=codecs,
            session_id=uuid.UUID(self.id).int & 0x7FFFFFFFFFFFFFFF,
            version=self._sdp_version,
            crypto=None if self.sdes is None else self.sdes.crypto,
        )

    def _secure(self, keys: SdesKeys) -> None:
        assert self.transport is not None
        self.sdes = keys
        self.transport.secure(keys.srtp, self._srtp_dropped)

    def _srtp_dropped(self) -> None:
        self.metrics.srtp_errors_total += 1

    def srtp_rekey(self) -> str:
        """`endpoint.srtp_rekey`: a new send key now, and an offer that carries it; the key of
        the answer (`accept_answer`) is then tried as the pending receive key."""
        if self.sdes is None or self.transport is None:
            raise endpoint_error("SRTP is not active on this endpoint")
        self.sdes.rekey()
        self._offered = self._offered or self.codecs
        self._sdp_version += 1
        self.transport.reopen_learning_window()
        return self._write(self.codecs or self._offered)

    def accept_answer(self, answer_text: str) -> None:
        """Apply the peer's answer to our offer (again: renegotiation)."""
        if not self._offered:
            raise endpoint_error("No pending offer to accept answer for")
        answer = sdp.parse_sdp(answer_text)
        codecs = sdp.reduce_answer_codecs(answer, self._offered)
        if not codecs:
            raise endpoint_error("SDP answer contains no codecs from the original offer")
        if answer.remote_address is None:
            raise endpoint_error("SDP answer has no connection address")
        renegotiation = self.state != "connecting"
        self._take_answer_crypto(answer.crypto)
        self._apply(codecs, answer)
        if renegotiation:
            assert self.transport is not None
            self.transport.reopen_learning_window()
            self.host.routing_changed()
        else:
            self.host.set_state(self, "connected")

    def _take_answer_crypto(self, crypto: sdp.Crypto | None) -> None:
        if self.sdes is not None:
            if crypto is None:
                raise endpoint_error("SDP answer has no a=crypto line for the SRTP offer")
            self.sdes.take_answer(crypto, time.monotonic())
        elif crypto is not None:
            logger.warning(
                "SDP answer for endpoint %s has a=crypto that the offer lacked: SRTP with a "
                "random send key the peer was not told",
                self.id,
            )
            self._secure(SdesKeys.answering(crypto))

    def _apply(self, codecs: tuple[sdp.Codec, ...], remote: sdp.SessionDescription) -> None:
        """Install negotiated codecs and the remote address."""
        assert self.transport is not None
        self.codecs = codecs
        send = sdp.send_codec(codecs)
        self.send_spec = None if send is None else _media_spec(send)
        event = sdp.telephone_event_codec(codecs)
        if sdp.telephone_event_codec(remote.codecs) is None:
            event = None  # our answer always lists it, but a peer that did not cannot take it
        self._event_pt = None if event is None else event.payload_type
        audio_types = {codec.payload_type for codec in codecs if not codec.is_telephone_event}
        self._event_types = (
            _FALLBACK_EVENT_TYPES - audio_types
            if event is None
            else frozenset({event.payload_type})
        )
        clock_rate = self.send_spec.clock_rate if self.send_spec else 8000
        self._detector = DtmfDetector(clock_rate)
        self._format = None
        if self.send_spec is not None:
            packet_ms = packet_duration_ms(self.send_spec, remote.ptime_ms, remote.maxptime_ms)
            self._format = OutputFormat(self.send_spec, packet_ms)
            self.output.set_packet(self._format.timestamp_step, packet_ms / 1000)
        self._decoder = None
        rtcp = None
        if remote.rtcp_port and remote.connection_address:
            rtcp = (remote.connection_address, remote.rtcp_port)
        self.transport.set_remote(remote.remote_address, rtcp, remote.rtcp_mux)
        self.transport.set_clock_rate(clock_rate, event_payload_type=self._event_pt)

    # -- description ---------------------------------------------------------------------------

    @property
    def codec(self) -> str | None:
        return None if self.send_spec is None else self.send_spec.name

    @property
    def wire_codec(self) -> str | None:
        spec = self.send_spec
        return None if spec is None else f"{spec.name.lower()}/{spec.clock_rate}"

    @property
    def accepts_dtmf(self) -> bool:
        return self._event_pt is not None

    @property
    def source_rate(self) -> int | None:
        return None if self.send_spec is None else self.send_spec.sample_rate

    @property
    def output_format(self) -> OutputFormat | None:
        return self._format

    @property
    def native_rate(self) -> int | None:
        spec = self.send_spec
        if spec is not None and spec.name.lower() == "opus":
            return OPUS_FULL_BAND
        return super().native_rate

    def code_at(self, rate: int) -> None:
        """Opus only: decode and encode at `rate` (the wire keeps its 48 kHz clock)."""
        spec = self.send_spec
        if spec is None or spec.name.lower() != "opus" or spec.sample_rate == rate:
            return
        self.send_spec = spec.with_sample_rate(rate)
        if self._format is not None:
            self._format = OutputFormat(self.send_spec, self._format.packet_ms)
        self._decoder = None
        self._packet_samples = 0

    def packet_counters(self) -> tuple[int, int]:
        transport = self.transport
        if transport is None:
            return (0, 0)
        malformed = transport.malformed_packets + transport.malformed_rtcp_packets
        return (malformed, transport.unexpected_source_packets)

    def plan_changed(self, table: RoutingTable) -> None:
        native = None if self.transport is None else self.transport.native
        if native is not None:
            native.release()
        endpoints = self.host.endpoints
        passthrough = []
        for destination_id in table.passthrough.get(self.id, ()):
            destination = endpoints[destination_id]
            assert isinstance(destination, RtpEndpoint)
            passthrough.append((destination, _payload_type_map(self.codecs, destination.codecs)))
        self._passthrough = tuple(passthrough)
        targets = []
        for destination_id in table.dtmf_destinations.get(self.id, ()):
            destination = endpoints[destination_id]
            if isinstance(destination, RtpEndpoint):
                targets.append(destination)
        self._event_targets = tuple(targets)
        passthrough_source = None
        if table.mode(self.id) is RouteMode.PASSTHROUGH:
            passthrough_source = table.sources[self.id][0]
        if passthrough_source != self._passthrough_source:
            self._passthrough_source = passthrough_source
            self.output.passthrough_offset = None
        decoding = self.chain is not None and self.chain.active
        if decoding and not self._decoding:
            self._jitter = JitterBuffer(depth_packets=3, max_delay_ms=60.0)
            self._decoder = None
        self._decoding = decoding
        links = [
            (destination.transport.native, _type_table(types))
            for destination, types in self._passthrough
            if destination.transport is not None and destination.transport.native is not None
        ]
        self._native_destinations = links if len(links) == len(self._passthrough) else []
        self._native_changed()

    # -- native forwarding ---------------------------------------------------------------------

    @property
    def packet_tap(self) -> Callable[[RtpPacket, float], None] | None:
        """Sees every inbound RTP packet first while a recording captures this leg."""
        return self._packet_tap

    @packet_tap.setter
    def packet_tap(self, tap: Callable[[RtpPacket, float], None] | None) -> None:
        self._packet_tap = tap
        self._native_changed()

    def _native_changed(self) -> None:
        """Take the rules back; if one could apply now, try on the next loop iteration."""
        native = None if self.transport is None else self.transport.native
        if native is None:
            return
        native.release()
        native.wanted = self.sdes is None and (
            self._receives_natively() or self._passthrough_source is not None
        )
        native.touch()

    def _receives_natively(self) -> bool:
        return bool(self._native_destinations) and self._packet_tap is None and not self._decoding

    def _arm_native(self, receiving: bool) -> None:
        native = None if self.transport is None else self.transport.native
        if native is None or self.closed or not native.wanted:
            return
        output = self.output
        if receiving:
            if self._receives_natively() and all(
                link.sending for link, _ in self._native_destinations
            ):
                native.arm_receiving(self._native_destinations)
        elif self._passthrough_source is not None and output.passthrough_offset is not None:
            native.arm_sending(output.passthrough_offset, output.last_time)

    def _native_released(
        self, routed: int, timeline: tuple[int, float] | None, last_received: float | None
    ) -> None:
        self.metrics.packets_routed_total += routed
        self.metrics.packets_forwarded_native_total += routed
        if timeline is not None:
            self.output.last_timestamp, self.output.last_time = timeline
        if last_received is not None and last_received > self.last_inbound:
            self.last_inbound = last_received

    # -- inbound -------------------------------------------------------------------------------

    def _on_packet(self, packet: RtpPacket, arrival: float) -> None:
        """Hot path: one valid inbound RTP packet."""
        self.last_inbound = arrival
        if self._packet_tap is not None:
            self._packet_tap(packet, arrival)
        payload_type = packet.payload_type
        if payload_type in self._event_types:
            self._on_event(packet, arrival)
            return
        for destination, types in self._passthrough:
            mapped = types.get(payload_type)
            if mapped is not None:
                destination.forward(packet, mapped, arrival)
        if self._decoding:
            jitter = self._jitter
            assert jitter is not None
            released = jitter.push(packet.sequence, packet, arrival, packet.ssrc)
            if released:
                self._decode(released, arrival)

    def _decode(self, released: list[tuple[int, RtpPacket | None]], now: float) -> None:
        chain = self.chain
        spec = self.send_spec
        if chain is None or spec is None:
            return
        decoder = self._decoder
        if decoder is None:
            try:
                decoder = self._decoder = create_decoder(spec)
            except MediaError:
                self.metrics.transcode_errors_total += 1
                return
        for _, packet in released:
            try:
                if packet is None:
                    pcm = decoder.conceal(self._packet_samples or chain.frame_samples)
                elif packet.payload_type != spec.payload_type:
                    continue
                elif not packet.payload:  # no audio for its slot: conceal like a lost packet
                    self._empty_payloads += 1
                    pcm = decoder.conceal(self._packet_samples or chain.frame_samples)
                else:
                    pcm = decoder.decode(bytes(packet.payload))
                    self._packet_samples = len(pcm) // SAMPLE_BYTES
            except MediaError:
                self.metrics.transcode_errors_total += 1
                continue
            if pcm:
                chain.push(pcm, now)

    def _on_event(self, packet: RtpPacket, arrival: float) -> None:
        for digit in self._detector.feed(packet.payload, packet.timestamp, arrival, packet.marker):
            self._report_digit(digit.digit, digit.duration_ms)
        if self.direction == "recvonly":
            return
        for destination in self._event_targets:
            destination.forward_event(packet, self.id)

    def _report_digit(self, digit: str, duration_ms: int) -> None:
        self.metrics.dtmf_events_total += 1
        host = self.host
        host.emit("dtmf", {"endpoint_id": self.id, "digit": digit, "duration_ms": duration_ms})
        host.route_digit(self, digit, duration_ms)

    def _on_rtcp_bye(self, ssrcs: list[int], reason: str | None) -> None:
        self.host.emit(
            "endpoint.rtcp_bye", {"endpoint_id": self.id, "ssrc_list": ssrcs, "reason": reason}
        )

    # -- outbound ------------------------------------------------------------------------------

    def forward(self, packet: RtpPacket, payload_type: int, arrival: float) -> None:
        """Passthrough: the packet as it came, with our PT/SSRC/sequence and a timestamp offset."""
        output = self.output
        offset = output.passthrough_offset
        transport = self.transport
        assert transport is not None
        if offset is None:
            offset = output.begin_passthrough(packet.timestamp)
            transport.touch_native()  # the timeline is set: the plane may send as us now
        timestamp = (packet.timestamp + offset) & 0xFFFFFFFF
        if transport.send(packet.payload, payload_type, timestamp, packet.marker):
            output.last_timestamp = timestamp
            output.last_time = arrival
            self.metrics.packets_routed_total += 1

    def deliver(self, payload: bytes, now: float) -> None:
        spec = self.send_spec
        transport = self.transport
        if spec is None or transport is None:
            return
        if transport.native is not None and transport.native.armed:
            transport.native.touch()
        output = self.output
        timestamp, marker = output.generated(now)
        if transport.send(payload, spec.payload_type, timestamp, marker):
            output.sent(timestamp, now)
            self.metrics.packets_routed_total += 1

    def forward_event(self, packet: RtpPacket, source_id: str) -> None:
        """A forwarded RFC 4733 packet with our event PT, on our audio timeline."""
        event_pt = self._event_pt
        transport = self.transport
        if event_pt is None or transport is None:
            return
        if transport.native is not None and transport.native.armed:
            transport.native.touch()
        output = self.output
        if source_id == self._passthrough_source and output.passthrough_offset is not None:
            timestamp = (packet.timestamp + output.passthrough_offset) & 0xFFFFFFFF
        else:
            key = (source_id, packet.timestamp)
            mapped = self._event_timestamps.get(key)
            if mapped is None:
                if len(self._event_timestamps) > 16:
                    self._event_timestamps.clear()
                base = output.last_timestamp
                mapped = packet.timestamp if base is None else (base + output.step) & 0xFFFFFFFF
                self._event_timestamps[key] = mapped
            timestamp = mapped
        transport.send(packet.payload, event_pt, timestamp, packet.marker)

    # -- DTMF ----------------------------------------------------------------------------------

    def hear_digit(self, digit: str, duration_ms: int, *, from_packets: bool) -> bool:
        """Digits that came as packets were forwarded as they are; others are injected."""
        return not from_packets and self.accepts_dtmf

    def inject_dtmf(self, digit: str, duration_ms: int, volume: int) -> bool:
        """Queue the RFC 4733 packets of one digit (TelephoneEventError for bad values)."""
        if self._event_pt is None or self.transport is None:
            raise endpoint_error("No telephone-event PT negotiated")
        event = sdp.telephone_event_codec(self.codecs)
        clock_rate = event.clock_rate if event is not None else 8000
        self.transport.start_dtmf(digit, duration_ms, volume, self._event_pt, clock_rate)
        return True

    @property
    def injecting(self) -> bool:
        return self.transport is not None and self.transport.dtmf_busy

    def pace_injection(self, now: float) -> bool:
        return self._transport_tick(now)

    # -- clock ---------------------------------------------------------------------------------

    @property
    def needs_tick(self) -> bool:  # type: ignore[override]
        """Only a decoding endpoint has per-frame work (its jitter buffer's deadlines)."""
        return self._decoding

    def tick(self, now: float) -> None:
        jitter = self._jitter
        if jitter is not None and jitter.held:
            released = jitter.tick(now)
            if released:
                self._decode(released, now)

    def periodic(self, now: float) -> None:
        self._transport_tick(now)

    def _transport_tick(self, now: float) -> bool:
        """RTCP and injected-digit pacing; True while a digit is still being sent."""
        transport = self.transport
        if transport is None or transport.closed:
            return False
        transport.tick(now)
        return transport.dtmf_busy

    def housekeeping(self, now: float) -> None:
        native = None if self.transport is None else self.transport.native
        if native is not None:
            native.progress()  # last_inbound (media timeout) and the counters, rules kept
            if native.wanted and not native.armed:
                native.touch()
        for digit in self._detector.poll(now):
            self._report_digit(digit.digit, digit.duration_ms)

    def rehost(self, host: EndpointHost) -> None:
        super().rehost(host)
        self.metrics = host.metrics

    def stats(self) -> dict[str, object]:
        if self.transport is None:
            return {}
        stats = self.transport.stats()
        srtp = self.transport.srtp
        if srtp is not None:
            stats["srtp"] = {"suite": srtp.send_key.suite, **srtp.counters()}
        return stats

    def info(self) -> dict[str, Any]:
        """The session.info entry, plus `inbound`: what arrived, what was lost, concealed or
        dropped, and why (`dropped` counts datagrams that reached no destination)."""
        info = super().info()
        transport, jitter = self.transport, self._jitter
        if transport is None:
            return info
        inbound = transport.stats()["inbound"]
        info["inbound"] = {
            "packets": inbound["packets"],
            "packets_lost": inbound["packets_lost"],
            "concealed": self._empty_payloads + (0 if jitter is None else jitter.lost),
            "dropped": {
                "malformed": transport.malformed_packets,
                "malformed_rtcp": transport.malformed_rtcp_packets,
                "late": 0 if jitter is None else jitter.late,
                "duplicate": 0 if jitter is None else jitter.duplicate,
            },
            "unexpected_source": transport.unexpected_source_packets,
        }
        return info

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._passthrough = ()
        self._event_targets = ()
        self._decoding = False
        transport = self.transport
        if transport is not None:
            transport.close()
            self.metrics.packets_malformed_total += (
                transport.malformed_packets + transport.malformed_rtcp_packets
            )
            self.metrics.packets_unexpected_source_total += transport.unexpected_source_packets

    async def wait_closed(self) -> None:
        if self.transport is not None:
            await self.transport.wait_closed()


def _type_table(types: dict[int, int]) -> bytes:
    """A payload type map as the forwarding plane takes it: 128 bytes, 0xFF for unmapped."""
    table = bytearray(b"\xff" * 128)
    for source, destination in types.items():
        table[source & 0x7F] = destination & 0x7F
    return bytes(table)


def _payload_type_map(
    source: tuple[sdp.Codec, ...], destination: tuple[sdp.Codec, ...]
) -> dict[int, int]:
    """Source PT -> destination PT for every audio codec both sides negotiated."""
    by_name = {
        codec.key: codec.payload_type for codec in destination if not codec.is_telephone_event
    }
    return {
        codec.payload_type: by_name[codec.key]
        for codec in source
        if not codec.is_telephone_event and codec.key in by_name
    }
