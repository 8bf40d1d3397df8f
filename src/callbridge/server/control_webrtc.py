"""Control methods for WebRTC endpoints: `endpoint.ice_restart`.

The new offer carries fresh ICE credentials (the candidate and DTLS identity stay); the peer's
answer comes back through `endpoint.accept_answer`.
"""

from __future__ import annotations

import msgspec

from callbridge.engine.errors import endpoint_error
from callbridge.engine.webrtc_endpoint import WebRtcEndpoint
from callbridge.server import control_messages as wire
from callbridge.server.control_context import ControlContext

__all__ = ["IceRestarted", "ice_restart"]


class IceRestarted(msgspec.Struct):
    sdp_offer: str


async def ice_restart(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.EndpointParams)
    session = context.live()
    session.touch()
    endpoint = session.endpoint(str(params.endpoint_id))
    if not isinstance(endpoint, WebRtcEndpoint):
        raise endpoint_error("Not a WebRTC endpoint")
    return IceRestarted(endpoint.ice_restart())
