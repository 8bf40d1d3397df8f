"""One request/response exchange of the session runtime: incoming requests and their answers.

The wire shape of an answer (result payload, error body) is produced here and only here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from callbridge.rtvbp.catalog import OperationSpec, decode_payload, encode_payload
from callbridge.rtvbp.envelope import ABSENT, ErrorBody, Payload, Response
from callbridge.rtvbp.errors import RemoteError, RtvbpError

__all__ = [
    "NO_REPLY_MESSAGE",
    "DeferredResponse",
    "EventHandler",
    "IncomingRequest",
    "RequestHandler",
    "encode_or_empty",
    "now_ms",
    "result_of",
]

NO_REPLY_MESSAGE = "request handler returned without responding or deferring"

RequestHandler = Callable[["IncomingRequest"], Awaitable[Any]]
"""Returns the result (a catalog Struct), raises RemoteError, or defers and returns None."""
EventHandler = Callable[[Any], Awaitable[None]]
"""Receives the event data decoded with the catalog's data type."""
SendResponse = Callable[[Response], Awaitable[None]]


def now_ms() -> int:
    """Wall-clock epoch milliseconds, the time base of ping t0/t1/t2."""
    return time.time_ns() // 1_000_000


class DeferredResponse:
    """The one answer to an incoming request; may be sent later from any task."""

    __slots__ = ("_after_success", "_send", "done", "request_id")

    def __init__(
        self,
        request_id: str,
        send: SendResponse,
        after_success: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.request_id = request_id
        self.done = False
        self._send = send
        self._after_success = after_success

    async def resolve(self, result: Any) -> None:
        """Answer with `result`; for a terminal operation the session then flushes and closes."""
        payload = encode_payload(result)
        self._claim()
        await self._send(Response(self.request_id, result=payload))
        if self._after_success is not None:
            await self._after_success()

    async def reject(self, code: int, message: str, data: Any = None) -> None:
        """Answer with an error (never closes the session)."""
        body = ErrorBody(code, message, ABSENT if data is None else encode_payload(data))
        self._claim()
        await self._send(Response(self.request_id, error=body))

    def _claim(self) -> None:
        if self.done:
            raise RtvbpError(f"request {self.request_id!r} was already answered")
        self.done = True


class IncomingRequest:
    """A request from the peer, with params decoded by the catalog's params type.

    `received_at_ms` is the epoch ms at which the transport delivered the frame (ping t1).
    """

    __slots__ = ("_deferred", "_reply", "id", "method", "params", "received_at_ms")

    def __init__(
        self,
        request_id: str,
        method: str,
        params: Any,
        received_at_ms: int,
        reply: DeferredResponse,
    ) -> None:
        self.id = request_id
        self.method = method
        self.params = params
        self.received_at_ms = received_at_ms
        self._reply = reply
        self._deferred = False

    @property
    def deferred(self) -> bool:
        return self._deferred

    def defer(self) -> DeferredResponse:
        """Claim the answer: the handler returns now and the answer is sent later."""
        self._deferred = True
        return self._reply


def encode_or_empty(value: Any) -> bytes:
    """Payload bytes of a params/data value; None means an empty object."""
    return b"{}" if value is None else encode_payload(value)


def result_of(spec: OperationSpec, response: Response) -> Any:
    """The typed result of a response; raises RemoteError for an error response.

    An absent result decodes as `{}`; a result that does not decode raises PayloadError.
    """
    error = response.error
    if error is not None:
        raise RemoteError(error.code, error.message, _json_or_none(error.data))
    return decode_payload(spec.result_type, response.result)


def _json_or_none(raw: Payload) -> Any:
    if not isinstance(raw, bytes):
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
