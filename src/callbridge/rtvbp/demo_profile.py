"""The ``rtvbp.demo.v1`` profile served and dialled: ``demo.echo`` and ``demo.observed``.

The profile carries no call and no media. Its application answers every ``demo.echo`` with
the message unchanged, then emits ``demo.observed`` with that message; the voice side calls it.
It lets a client check that it reaches an RTVBP server, authenticates and negotiates a profile
other than ``rtvbp.v1``, without placing a call. Every ingress path that negotiates profiles
serves it (`serve_demo`); `demo_echo` is the voice side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Final

from callbridge.rtvbp import demo_v1
from callbridge.rtvbp.catalog import Role
from callbridge.rtvbp.errors import RtvbpError
from callbridge.rtvbp.session import CloseInfo, IncomingRequest, RtvbpSession
from callbridge.rtvbp.transport_base import Transport
from callbridge.rtvbp.websocket import connect

__all__ = ["DEMO_PROFILE", "demo_echo", "serve_demo"]

DEMO_PROFILE: Final = "rtvbp.demo.v1"

logger = logging.getLogger(__name__)


async def serve_demo(transport: Transport, *, request_timeout_s: float = 5.0) -> CloseInfo:
    """Serve the application role of demo.v1 over `transport` until the peer closes."""
    session = RtvbpSession(
        Role.APPLICATION, demo_v1.CATALOG, transport, request_timeout_s=request_timeout_s
    )

    async def echo(request: IncomingRequest) -> None:
        message = request.params.message
        reply = request.defer()
        await reply.resolve(demo_v1.DemoEchoResponse(message=message))
        try:
            await session.notify("demo.observed", demo_v1.DemoObservedEvent(message=message))
        except RtvbpError as error:
            logger.debug("demo.observed not sent: %s", error)

    session.handle("demo.echo", echo)
    async with session:
        return await session.wait_closed()


async def demo_echo(
    url: str,
    message: str,
    *,
    bearer_token: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 5.0,
) -> tuple[str, str]:
    """Dial `url` offering ``rtvbp.demo.v1`` and call ``demo.echo`` with `message`.

    Returns the echoed message and the one ``demo.observed`` carried; raises ConnectError,
    RtvbpError or TimeoutError."""
    connected = await connect(
        url,
        profiles=(DEMO_PROFILE,),
        bearer_token=bearer_token,
        headers=headers,
        connect_timeout_s=timeout_s,
    )
    observed: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def on_observed(data: demo_v1.DemoObservedEvent) -> None:
        if not observed.done():
            observed.set_result(data.message)

    session = RtvbpSession(
        Role.VOICE, demo_v1.CATALOG, connected.transport, request_timeout_s=timeout_s
    )
    session.on_event("demo.observed", on_observed)
    async with session:
        response = await session.request("demo.echo", demo_v1.DemoEchoRequest(message=message))
        async with asyncio.timeout(timeout_s):
            seen = await observed
    return response.message, seen
