"""Control method `endpoint.srtp_rekey`: new SDES keys for a plain RTP endpoint with SRTP.

The result is an SDP offer with the new `a=crypto` key (`{"sdp": ...}`); the send key changes at
once, and the peer's answer goes through `endpoint.accept_answer`, whose key becomes the pending
receive key. ENDPOINT_ERROR for an endpoint without SRTP, another kind, or an unknown id.
"""

from __future__ import annotations

import msgspec

from callbridge.engine import offers
from callbridge.server import control_messages as wire
from callbridge.server.control_context import ControlContext

__all__ = ["SrtpRekeyed", "srtp_rekey"]


class SrtpRekeyed(msgspec.Struct):
    sdp: str


async def srtp_rekey(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.EndpointParams)
    return SrtpRekeyed(await offers.srtp_rekey(context.live(), str(params.endpoint_id)))
