"""Control methods of the `session.*` family: bind a connection to a media session, inspect,
destroy and bridge sessions.

A connection is bound to at most one session: `session.create` and `session.attach` on a bound
connection fail with SESSION_ALREADY_BOUND. `session.list` needs no bound session.
"""

from __future__ import annotations

import logging

import msgspec

from callbridge.engine import bridge_endpoint
from callbridge.engine.errors import EngineError
from callbridge.server import control_messages as wire
from callbridge.server.control_context import ControlContext
from callbridge.server.errors import (
    SESSION_ALREADY_BOUND,
    SESSION_GONE,
    SESSION_NOT_FOUND,
    SHUTTING_DOWN,
    ControlError,
)

__all__ = ["attach", "bridge", "create", "destroy", "info", "list_sessions"]

log = logging.getLogger(__name__)


def _check_unbound(context: ControlContext) -> None:
    if context.session is not None:
        raise ControlError(
            SESSION_ALREADY_BOUND, f"connection is already bound to session {context.session.id}"
        )


async def create(context: ControlContext, raw: msgspec.Raw) -> object:
    if context.manager.shutting_down:
        raise ControlError(SHUTTING_DOWN, "server is shutting down")
    _check_unbound(context)
    session = context.session = context.manager.create_session(context.emit)
    log.info("session %s created (control connection %d)", session.id, context.number)
    return wire.SessionCreated(session.id)


async def attach(context: ControlContext, raw: msgspec.Raw) -> object:
    _check_unbound(context)
    params = wire.decode_params(raw, wire.AttachParams)
    session = context.session = context.manager.attach(str(params.session_id), context.emit)
    log.info("session %s attached (control connection %d)", session.id, context.number)
    return wire.EMPTY


async def destroy(context: ControlContext, raw: msgspec.Raw) -> object:
    """Unbind first: the connection is free again whatever the outcome."""
    session = context.bound_session()
    context.session = None
    if not session.alive:
        raise ControlError(SESSION_NOT_FOUND, f"session {session.id} not found")
    try:
        await session.destroy()
    except EngineError as error:
        if error.code == SESSION_GONE:
            raise ControlError(SESSION_NOT_FOUND, f"session {session.id} not found") from None
        raise
    log.info("session %s destroyed (control connection %d)", session.id, context.number)
    return wire.EMPTY


async def info(context: ControlContext, raw: msgspec.Raw) -> object:
    return context.live().info()


async def list_sessions(context: ControlContext, raw: msgspec.Raw) -> object:
    return wire.SessionList([session.summary() for session in context.manager.sessions()])


async def bridge(context: ControlContext, raw: msgspec.Raw) -> object:
    """A bridge endpoint here and one in the target session; the engine refuses a self-bridge."""
    params = context.params(raw, wire.BridgeParams)
    endpoint_id, target_endpoint_id = await bridge_endpoint.bridge(
        context.live(), str(params.target_session_id), params.direction, context.manager.get
    )
    return wire.BridgeCreated(endpoint_id, target_endpoint_id)
