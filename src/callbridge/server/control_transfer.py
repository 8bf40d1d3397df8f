"""The `endpoint.transfer` control method: move a live endpoint into another session.

Its params and result are declared here (rtpbridge's shapes). The checks after the params
(self transfer, missing target, missing or unmovable endpoint, full target) are the engine's.
"""

from __future__ import annotations

from uuid import UUID

import msgspec

from callbridge.engine import transfer as engine_transfer
from callbridge.server.control_context import ControlContext

__all__ = ["TransferParams", "Transferred", "transfer"]


class TransferParams(msgspec.Struct):
    endpoint_id: UUID
    target_session_id: UUID


class Transferred(msgspec.Struct):
    endpoint_id: str
    target_session_id: str


async def transfer(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, TransferParams)
    endpoint_id, target_session_id = str(params.endpoint_id), str(params.target_session_id)
    await engine_transfer.transfer(
        context.live(), endpoint_id, target_session_id, context.manager.get
    )
    return Transferred(endpoint_id, target_session_id)
