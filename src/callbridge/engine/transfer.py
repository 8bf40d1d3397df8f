"""`endpoint.transfer`: move a live endpoint into another session of this worker.

Nothing about the leg changes for its remote peer: the endpoint object itself moves, with its
socket, learnt peer address, SSRC and sequence numbers, codecs, jitter buffer, DTMF detector
and the digit it may be injecting; only the session it belongs to (`Endpoint.rehost`) and its
routes change. Everything runs synchronously on the worker's event loop between two media
clock frames, so no packet is handled half-way and at most the frame in flight is lost.

Order of the checks (rtpbridge's): a self transfer (INVALID_PARAMS), a missing target
(SESSION_NOT_FOUND), a missing endpoint or one that cannot move, a file or a tone
(ENDPOINT_ERROR), a full target (TRANSFER_FAILED). Room in the target is reserved *before* the
endpoint leaves, so a full target refuses the transfer with the endpoint, its recordings and
its routes untouched. If the target ends while the endpoint is on its way (an observer of the
source did it), the endpoint is put back: TRANSFER_FAILED, and the source gets
`endpoint.transferred_in` with itself as `source_session_id`, as rtpbridge reports a rollback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from callbridge.engine.endpoint import Endpoint
from callbridge.engine.errors import TRANSFER_FAILED, EngineError
from callbridge.engine.session import EndpointSlot, MediaSession, find_target

__all__ = ["TRANSFER_REASON", "transfer"]

TRANSFER_REASON: Final = "endpoint_transferred"
"""What session observers hear when an endpoint leaves by transfer (recordings stop with it)."""


async def transfer(
    session: MediaSession,
    endpoint_id: str,
    target_session_id: str,
    find_session: Callable[[str], MediaSession | None],
) -> None:
    """Move endpoint `endpoint_id` of `session` into session `target_session_id`
    (`find_session` looks it up); see the module docstring for errors and events."""
    target = find_target(
        session, target_session_id, find_session, "Cannot transfer an endpoint to its own session"
    )
    endpoint = session.endpoint(endpoint_id)
    endpoint.check_transfer(target)
    try:
        place = target.reserve()
    except EngineError as error:
        raise EngineError(
            TRANSFER_FAILED, f"Target session {target.id} cannot take the endpoint: {error.message}"
        ) from None
    try:
        _move(endpoint, session, target, place)
    finally:
        place.release()


def _move(
    endpoint: Endpoint, source: MediaSession, target: MediaSession, place: EndpointSlot
) -> None:
    source.detach(endpoint, TRANSFER_REASON)
    source.emit(
        "endpoint.transferred_out", {"endpoint_id": endpoint.id, "target_session_id": target.id}
    )
    if target.alive:
        endpoint.rehost(target)
        place.adopt(endpoint)
        target.emit("endpoint.transferred_in", _arrival(endpoint, source))
        return
    if not source.alive:
        endpoint.close()  # both sessions ended during the move: nowhere to go back to
        source.metrics.endpoints_active -= 1
        raise EngineError(TRANSFER_FAILED, "Both sessions ended during the transfer")
    with source.slot() as back:
        back.adopt(endpoint)
    source.emit("endpoint.transferred_in", _arrival(endpoint, source))
    raise EngineError(TRANSFER_FAILED, f"Target session {target.id} ended during the transfer")


def _arrival(endpoint: Endpoint, source: MediaSession) -> dict[str, str]:
    return {
        "endpoint_id": endpoint.id,
        "source_session_id": source.id,
        "endpoint_type": endpoint.kind,
        "direction": endpoint.direction,
        "state": endpoint.state,
    }
