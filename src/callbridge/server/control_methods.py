"""The control method table: every method name a client may send, mapped to its handler, and
the methods known but not served yet.

A handler takes the connection's `ControlContext` and the request's raw params and returns the
result to send back; it fails by raising `ControlError` or `EngineError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import msgspec

from callbridge.server import control_endpoint as endpoint
from callbridge.server import control_messages as wire
from callbridge.server import control_recording as recording
from callbridge.server import control_rtvbp as rtvbp
from callbridge.server import control_session as session
from callbridge.server import control_srtp as srtp
from callbridge.server import control_stats as stats
from callbridge.server import control_transfer
from callbridge.server import control_vad as vad
from callbridge.server import control_webrtc as webrtc
from callbridge.server.control_context import ControlContext
from callbridge.server.errors import (
    UNKNOWN_METHOD,
    ControlError,
)

__all__ = ["METHODS", "Handler", "dispatch"]

Handler = Callable[[ControlContext, msgspec.Raw], Awaitable[object]]

METHODS: Final[Mapping[str, Handler]] = {
    "session.create": session.create,
    "session.attach": session.attach,
    "session.destroy": session.destroy,
    "session.info": session.info,
    "session.list": session.list_sessions,
    "session.bridge": session.bridge,
    "endpoint.create_from_offer": endpoint.create_from_offer,
    "endpoint.create_offer": endpoint.create_offer,
    "endpoint.accept_answer": endpoint.accept_answer,
    "endpoint.create_with_file": endpoint.create_with_file,
    "endpoint.create_tone": endpoint.create_tone,
    "endpoint.remove": endpoint.remove,
    "endpoint.file.seek": endpoint.file_seek,
    "endpoint.file.pause": endpoint.file_pause,
    "endpoint.file.resume": endpoint.file_resume,
    "endpoint.dtmf.inject": endpoint.dtmf_inject,
    "endpoint.srtp_rekey": srtp.srtp_rekey,
    "endpoint.transfer": control_transfer.transfer,
    "endpoint.create_rtvbp": rtvbp.create_rtvbp,
    "endpoint.rtvbp.request": rtvbp.rtvbp_request,
    "endpoint.rtvbp.notify": rtvbp.rtvbp_notify,
    "session.variables.get": rtvbp.variables_get,
    "session.variables.set": rtvbp.variables_set,
    "calls.subscribe": rtvbp.calls_subscribe,
    "calls.unsubscribe": rtvbp.calls_unsubscribe,
    "recording.start": recording.recording_start,
    "recording.stop": recording.recording_stop,
    "vad.start": vad.vad_start,
    "vad.stop": vad.vad_stop,
    "stats.subscribe": stats.stats_subscribe,
    "stats.unsubscribe": stats.stats_unsubscribe,
    "endpoint.ice_restart": webrtc.ice_restart,
}


async def dispatch(context: ControlContext, request: wire.Request) -> object:
    """Run the request's handler; an unknown method fails with UNKNOWN_METHOD."""
    handler = METHODS.get(request.method)
    if handler is None:
        raise ControlError(UNKNOWN_METHOD, f"unknown method {request.method[:100]!r}")
    return await handler(context, request.params)
