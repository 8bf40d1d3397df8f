"""Control methods for RTVBP legs in media sessions (see docs/rtvbp-media.md).

* `endpoint.create_rtvbp`: dial an RTVBP application (callbridge is the voice peer).
* `endpoint.rtvbp.request` / `endpoint.rtvbp.notify`: any operation the peer handles, any event
  callbridge's role on that leg emits, validated against the babelforce.v1 catalog.
* `session.variables.get` / `session.variables.set`: the variables applications read and
  write with `session.get` / `session.set`.
* `calls.subscribe` / `calls.unsubscribe` (no session needed): `call.incoming` for every call
  parked on the media ingress path.

Errors follow the rest of the control protocol: NO_SESSION first, INVALID_PARAMS for params,
ENDPOINT_ERROR for what the endpoint or its peer refused.
"""

from __future__ import annotations

import msgspec

from callbridge.engine import rtvbp_control
from callbridge.server import control_messages as wire
from callbridge.server.control_context import ControlContext

__all__ = [
    "calls_subscribe",
    "calls_unsubscribe",
    "create_rtvbp",
    "rtvbp_notify",
    "rtvbp_request",
    "variables_get",
    "variables_set",
]


async def create_rtvbp(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.CreateRtvbpParams)
    call = None
    if params.call is not None:
        call = {
            "id": params.call.id,
            "session_id": params.call.session_id,
            "from": params.call.from_,
            "to": params.call.to,
        }
    endpoint_id = await rtvbp_control.create_rtvbp(
        context.live(),
        params.url,
        direction=params.direction,
        bearer_token=params.bearer_token,
        headers=params.headers,
        call=call,
        application_id=params.application_id,
        metadata=params.metadata,
        codecs=params.codecs,
        profile=params.profile,
    )
    return wire.EndpointCreated(endpoint_id)


async def rtvbp_request(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.RtvbpRequestParams)
    result = await rtvbp_control.rtvbp_request(
        context.live(), str(params.endpoint_id), params.method, bytes(params.params)
    )
    return wire.RtvbpResult(result)


async def rtvbp_notify(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.RtvbpNotifyParams)
    await rtvbp_control.rtvbp_notify(
        context.live(), str(params.endpoint_id), params.event, bytes(params.data)
    )
    return wire.EMPTY


async def variables_get(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.VariablesGetParams)
    return wire.Variables(context.live().get_variables(params.keys))


async def variables_set(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, wire.VariablesSetParams)
    context.live().set_variables(params.data)
    return wire.EMPTY


async def calls_subscribe(context: ControlContext, raw: msgspec.Raw) -> object:
    context.subscribe_calls()
    return wire.EMPTY


async def calls_unsubscribe(context: ControlContext, raw: msgspec.Raw) -> object:
    context.unsubscribe_calls()
    return wire.EMPTY
