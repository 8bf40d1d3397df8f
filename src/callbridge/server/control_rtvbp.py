"""Control methods for RTVBP legs in media sessions (see docs/rtvbp-media.md).

* `endpoint.create_rtvbp`: dial an RTVBP application (callbridge is the voice peer).
* `endpoint.rtvbp.request` / `endpoint.rtvbp.notify`: any operation the peer handles, any event
  callbridge's role on that leg emits, validated against the babelforce.v1 catalog.
* `session.variables.get` / `session.variables.set`: the variables applications read and
  write with `session.get` / `session.set`.
* `calls.subscribe` / `calls.unsubscribe` (no session needed): `call.incoming` for every call
  parked on the media ingress path.

Method-level errors follow the rtpbridge conventions: NO_SESSION first, INVALID_PARAMS for
params, ENDPOINT_ERROR for what the endpoint or its peer refused. These handlers are methods of
`ControlConnection` in all but location (they use its `_command` and `_live` helpers); they
live here to keep control.py one concept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final

import msgspec

from callbridge.engine.rtvbp_control import create_rtvbp, rtvbp_notify, rtvbp_request
from callbridge.server import control_messages as wire

if TYPE_CHECKING:
    from callbridge.server.control import ControlConnection

__all__ = ["RTVBP_METHODS"]


async def _create_rtvbp(connection: ControlConnection, raw: msgspec.Raw) -> object:
    session, params = connection._command(raw, wire.CreateRtvbpParams)
    call = None
    if params.call is not None:
        call = {
            "id": params.call.id,
            "session_id": params.call.session_id,
            "from": params.call.from_,
            "to": params.call.to,
        }
    endpoint_id = await create_rtvbp(
        connection._live(session),
        params.url,
        direction=params.direction,
        bearer_token=params.bearer_token,
        headers=params.headers,
        call=call,
        application_id=params.application_id,
        metadata=params.metadata,
        codecs=params.codecs,
    )
    return wire.EndpointCreated(endpoint_id)


async def _rtvbp_request(connection: ControlConnection, raw: msgspec.Raw) -> object:
    session, params = connection._command(raw, wire.RtvbpRequestParams)
    result = await rtvbp_request(
        connection._live(session), str(params.endpoint_id), params.method, bytes(params.params)
    )
    return wire.RtvbpResult(result)


async def _rtvbp_notify(connection: ControlConnection, raw: msgspec.Raw) -> object:
    session, params = connection._command(raw, wire.RtvbpNotifyParams)
    await rtvbp_notify(
        connection._live(session), str(params.endpoint_id), params.event, bytes(params.data)
    )
    return wire.EMPTY


async def _variables_get(connection: ControlConnection, raw: msgspec.Raw) -> object:
    session, params = connection._command(raw, wire.VariablesGetParams)
    return wire.Variables(connection._live(session).get_variables(params.keys))


async def _variables_set(connection: ControlConnection, raw: msgspec.Raw) -> object:
    session, params = connection._command(raw, wire.VariablesSetParams)
    connection._live(session).set_variables(params.data)
    return wire.EMPTY


async def _calls_subscribe(connection: ControlConnection, raw: msgspec.Raw) -> object:
    connection.server.call_subscribers.add(connection)
    return wire.EMPTY


async def _calls_unsubscribe(connection: ControlConnection, raw: msgspec.Raw) -> object:
    connection.server.call_subscribers.discard(connection)
    return wire.EMPTY


RTVBP_METHODS: Final[
    Mapping[str, Callable[[ControlConnection, msgspec.Raw], Awaitable[object]]]
] = {
    "endpoint.create_rtvbp": _create_rtvbp,
    "endpoint.rtvbp.request": _rtvbp_request,
    "endpoint.rtvbp.notify": _rtvbp_notify,
    "session.variables.get": _variables_get,
    "session.variables.set": _variables_set,
    "calls.subscribe": _calls_subscribe,
    "calls.unsubscribe": _calls_unsubscribe,
}
