"""The RTVBP side of one media session: outbound legs, the controller's RTVBP requests and
events, the session variables, and DTMF across leg types.

DTMF between legs (a digit is never sent back to the leg it came from, and follows routing):

* a digit detected on an RTP endpoint (RFC 4733) or pressed on an inbound voice peer (a
  `dtmf` event) goes to every RTVBP leg that hears that source: a `dtmf` event to an
  application (outbound leg), in-band tones to a voice peer (inbound leg: RTVBP gives the
  application role no `dtmf` event to send);
* a digit from a voice peer is injected as RFC 4733 into every RTP endpoint that hears that leg
  and negotiated telephone-event. rtpbridge injects one digit at a time per session, so these
  digits wait in a queue that the media clock starts one after the other.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from yarl import URL

from callbridge.engine.endpoint import check_direction
from callbridge.engine.errors import INVALID_PARAMS, EngineError, endpoint_error
from callbridge.engine.rtp_endpoint import RtpEndpoint
from callbridge.engine.rtvbp_endpoint import RtvbpEndpoint, payload_json
from callbridge.engine.rtvbp_outbound import OutboundRtvbpEndpoint
from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.catalog import decode_payload
from callbridge.rtvbp.errors import PayloadError

if TYPE_CHECKING:
    from callbridge.engine.endpoint import Endpoint
    from callbridge.engine.session import MediaSession

__all__ = ["DEFAULT_RATES", "SessionRtvbp", "parse_codecs"]

DEFAULT_RATES: Final = (8000, 16000, 24000, 48000)
"""L16 rates offered to an application after the preferred one."""
INJECTION_VOLUME: Final = 10
MANAGED_BY_CALLBRIDGE: Final = frozenset({"session.initialize", "session.updated"})
"""The handshake callbridge runs itself; a controller may not send these."""


def parse_codecs(values: Sequence[str | int]) -> list[bf.AudioCodec]:
    """Codec offers from the controller: "L16/16000/1", "L16/16000" or a rate such as 16000."""
    codecs: list[bf.AudioCodec] = []
    for value in values:
        if isinstance(value, int):
            rate, channels = value, 1
        else:
            parts = value.split("/")
            if parts[0].upper() != "L16" or not 2 <= len(parts) <= 3:
                raise EngineError(INVALID_PARAMS, f"codec {value!r} is not L16/<rate>[/1]")
            try:
                rate = int(parts[1])
                channels = int(parts[2]) if len(parts) == 3 else 1
            except ValueError:
                raise EngineError(
                    INVALID_PARAMS, f"codec {value!r} is not L16/<rate>[/1]"
                ) from None
        if channels != 1:
            raise EngineError(INVALID_PARAMS, f"codec {value!r}: only mono (1 channel) is carried")
        if not 8000 <= rate <= 48000 or rate % 50:
            raise EngineError(
                INVALID_PARAMS,
                f"codec {value!r}: the rate must be 8000..48000 Hz, a multiple of 50",
            )
        codec = bf.AudioCodec.l16(rate)
        if codec not in codecs:
            codecs.append(codec)
    if not codecs:
        raise EngineError(INVALID_PARAMS, "codecs must not be empty")
    return codecs


def _check_url(url: str) -> None:
    try:
        parsed = URL(url)
    except ValueError:
        parsed = None
    if parsed is None or parsed.scheme not in ("ws", "wss") or not parsed.host:
        raise EngineError(INVALID_PARAMS, "url must be a ws:// or wss:// URL with a host")


class SessionRtvbp:
    """The RTVBP methods and DTMF crossing of one `MediaSession` (its `rtvbp` attribute)."""

    def __init__(self, session: MediaSession) -> None:
        self.session = session
        self.pending_digits: deque[tuple[RtpEndpoint, str, int]] = deque()
        """Digits for RTP endpoints waiting for the session's one injection slot."""

    # -- codecs --------------------------------------------------------------------------------

    def preferred_rate(self, exclude: Endpoint | None = None) -> int | None:
        """The L16 rate that spares the session resampling: the highest rate its endpoints
        already use (PCMU/PCMA 8000, G.722 16000, Opus and bridges 48000); None if none."""
        rates = []
        for endpoint in self.session.endpoints.values():
            if endpoint is exclude:
                continue
            output = endpoint.output_format
            rate = output.sample_rate if output is not None else endpoint.source_rate
            if rate:
                rates.append(rate)
        return max(rates) if rates else None

    def default_offers(self) -> list[bf.AudioCodec]:
        preferred = self.preferred_rate() or DEFAULT_RATES[0]
        rates = [preferred, *(rate for rate in DEFAULT_RATES if rate != preferred)]
        return [bf.AudioCodec.l16(rate) for rate in rates]

    def calls(self) -> list[dict[str, Any]]:
        """The session's RTVBP legs as session.list shows them."""
        return [
            endpoint.call_summary()
            for endpoint in self.session.endpoints.values()
            if isinstance(endpoint, RtvbpEndpoint)
        ]

    # -- control methods -----------------------------------------------------------------------

    async def create(
        self,
        url: str,
        *,
        direction: str = "sendrecv",
        bearer_token: str | None = None,
        headers: Mapping[str, str] | None = None,
        call: Mapping[str, str | None] | None = None,
        application_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        codecs: Sequence[str | int] | None = None,
    ) -> str:
        """An outbound leg dialling `url`; returns its id at once (state `connecting`).

        `call` may give `id`, `session_id`, `from`, `to` (defaults: a random id, this
        media session's id, "", ""). `codecs` defaults to the rate the session prefers, then
        the other usual rates.
        """
        session = self.session
        check_direction(direction)
        session.touch()
        _check_url(url)
        offers = parse_codecs(codecs) if codecs is not None else self.default_offers()
        fields = dict(call or {})
        call_info = bf.CallInfo(
            id=fields.get("id") or uuid.uuid4().hex,
            session_id=fields.get("session_id") or session.id,
            from_=fields.get("from") or "",
            to=fields.get("to") or "",
        )
        session.reserve_slot()
        endpoint = OutboundRtvbpEndpoint(
            session,
            direction,
            url=url,
            call=call_info,
            application_id=application_id or "callbridge",
            metadata=metadata,
            codecs=offers,
            bearer_token=bearer_token,
            headers=headers,
        )
        session.add(endpoint)
        endpoint.start()
        return endpoint.id

    async def request(self, endpoint_id: str, method: str, params: bytes) -> Any:
        """Call `method` on the peer of an RTVBP endpoint; the result as plain JSON values."""
        self.session.touch()
        endpoint = self._endpoint(endpoint_id)
        spec = bf.CATALOG.operations.get(method)
        if spec is None:
            raise EngineError(INVALID_PARAMS, f"unknown RTVBP method {method!r}")
        peer = endpoint.role.peer
        if method in MANAGED_BY_CALLBRIDGE:
            raise EngineError(INVALID_PARAMS, f"{method} is run by callbridge itself")
        if not spec.is_handled_by(peer):
            raise EngineError(
                INVALID_PARAMS,
                f"the peer of this endpoint is the {peer} role, which does not handle {method}",
            )
        try:
            decoded = decode_payload(spec.params_type, params)
        except PayloadError as error:
            raise EngineError(INVALID_PARAMS, f"invalid {method} params: {error.message}") from None
        result = await endpoint.request(method, decoded)
        return {} if result is None else payload_json(result)

    async def notify(self, endpoint_id: str, event: str, data: bytes) -> None:
        """Emit `event` (one callbridge's role on that leg emits) to the endpoint's peer."""
        self.session.touch()
        endpoint = self._endpoint(endpoint_id)
        spec = bf.CATALOG.events.get(event)
        if spec is None:
            raise EngineError(INVALID_PARAMS, f"unknown RTVBP event {event!r}")
        if event in MANAGED_BY_CALLBRIDGE:
            raise EngineError(INVALID_PARAMS, f"{event} is sent by callbridge itself")
        if spec.emitted_by is not endpoint.role:
            raise EngineError(
                INVALID_PARAMS,
                f"{event} is emitted by the {spec.emitted_by} role; callbridge is the"
                f" {endpoint.role} on this endpoint",
            )
        try:
            decoded = decode_payload(spec.data_type, data)
        except PayloadError as error:
            raise EngineError(INVALID_PARAMS, f"invalid {event} data: {error.message}") from None
        await endpoint.notify(event, decoded)

    def get_variables(self, keys: Sequence[str] | None) -> dict[str, Any]:
        """The session variables (all of them without keys; missing keys are left out)."""
        self.session.touch()
        variables = self.session.variables
        if not keys:
            return dict(variables)
        return {key: variables[key] for key in keys if key in variables}

    def set_variables(self, data: Mapping[str, Any]) -> None:
        self.session.touch()
        self.session.variables.update(data)

    def _endpoint(self, endpoint_id: str) -> RtvbpEndpoint:
        endpoint = self.session.endpoint(endpoint_id)
        if not isinstance(endpoint, RtvbpEndpoint):
            raise endpoint_error("Not an RTVBP endpoint")
        return endpoint

    # -- DTMF across legs ----------------------------------------------------------------------

    def route_digit(self, source: Endpoint, digit: str, duration_ms: int) -> None:
        """A digit from `source` reaches the legs that hear it (see the module docstring)."""
        session = self.session
        endpoints = session.endpoints
        for destination_id in session.plan.table.destinations.get(source.id, ()):
            destination = endpoints.get(destination_id)
            if isinstance(destination, RtvbpEndpoint):
                destination.send_digit(digit, duration_ms)
            elif (
                not source.is_rtp
                and isinstance(destination, RtpEndpoint)
                and destination.accepts_dtmf
            ):
                self.pending_digits.append((destination, digit, duration_ms))
        if self.pending_digits:
            self.start_pending_digit()

    def start_pending_digit(self) -> None:
        """Start the next queued RFC 4733 digit if no injection is running (media clock)."""
        session = self.session
        if session.injecting:
            return
        pending = self.pending_digits
        while pending:
            endpoint, digit, duration_ms = pending.popleft()
            if endpoint.closed or endpoint.id not in session.endpoints:
                continue
            try:
                session.start_injection(endpoint, digit, duration_ms, INJECTION_VOLUME)
            except EngineError:
                continue
            return
