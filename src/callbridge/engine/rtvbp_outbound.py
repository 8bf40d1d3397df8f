"""An outbound RTVBP leg: callbridge is the voice peer and dials an RTVBP application.

`endpoint.create_rtvbp` returns at once with the endpoint `connecting`; a background task dials,
sends ``session.initialize`` with the offered codecs and ``session.updated``, and the endpoint
becomes `connected` (`endpoint.state_changed`). The application's audio waits in the
`VoiceCall`'s playout buffer, read one frame per clock tick. Every voice-role operation is
answered by the `VoiceCall`: ``audio.buffer.clear`` clears that buffer, ``session.get/set`` use
the media session's variables, ``recording.start/stop`` record the session (`LegRecorder`). A
failure to dial ends in `endpoint.rtvbp.ended {reason: "failed", detail}` and the endpoint is
removed. With the ``rtvbp.webrtc.v1`` profile the `VoiceCall` offers WebRTC audio after the
upgrade and the leg is `connected` once the media is keyed; media that never connects is such a
failure too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from yarl import URL

from callbridge.engine.endpoint import EndpointHost
from callbridge.engine.recording_rtvbp import LegRecorder
from callbridge.engine.rtvbp_endpoint import RtvbpEndpoint, webrtc_options
from callbridge.rtvbp import babelforce_v1 as bf
from callbridge.rtvbp.catalog import Role
from callbridge.rtvbp.errors import RemoteError, RtvbpError, SessionClosedError
from callbridge.rtvbp.voice import VoiceCall

__all__ = ["OutboundRtvbpEndpoint", "display_url"]

logger = logging.getLogger(__name__)


def display_url(url: str) -> str:
    """`url` without credentials: no user info and no query string (it often carries tokens)."""
    parsed = URL(url)
    return str(parsed.with_user(None).with_query(None).with_fragment(None))


def describe_failure(error: Exception) -> str:
    """What went wrong while dialling, for `endpoint.rtvbp.ended` detail."""
    if isinstance(error, RemoteError):
        return f"application refused session.initialize: {error.code} {error.message}"
    if isinstance(error, SessionClosedError):
        return f"application closed the connection during session.initialize ({error})"
    if isinstance(error, RtvbpError):
        return str(error)  # ConnectError (says 401 and the like), timeouts, codec violations
    return f"{type(error).__name__}: {error}"


class OutboundRtvbpEndpoint(RtvbpEndpoint):
    """A leg to an RTVBP application (see the module docstring)."""

    role = Role.VOICE

    def __init__(
        self,
        host: EndpointHost,
        direction: str,
        *,
        url: str,
        call: bf.CallInfo,
        application_id: str,
        metadata: dict[str, Any] | None,
        codecs: Sequence[bf.AudioCodec],
        bearer_token: str | None,
        headers: Mapping[str, str] | None,
        profile: str,
    ) -> None:
        super().__init__(
            host,
            direction,
            "connecting",
            call=call,
            application_id=application_id,
            metadata=metadata,
            profile=profile,
        )
        self.url = url
        self.offered = tuple(codecs)
        self.voice: VoiceCall | None = None
        self._bearer_token = bearer_token
        self._headers = dict(headers) if headers else None
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> dict[str, Any]:
        description = super().describe()
        description["url"] = display_url(self.url)
        return description

    def start(self) -> None:
        """Dial in the background (the control request has already returned)."""
        self._task = self.host.context.spawn(self._run(), name=f"rtvbp-dial-{self.id}")

    async def _run(self) -> None:
        config = self.host.context.config
        try:
            voice = await VoiceCall.dial(
                self.url,
                call=self.call_info,
                application_id=self.application_id,
                metadata=self.metadata,
                codecs=self.offered,
                bearer_token=self._bearer_token,
                headers=self._headers,
                request_timeout_s=config.rtvbp_request_timeout_s,
                connect_timeout_s=config.rtvbp_connect_timeout_s,
                variables=self.host.variables,
                event_hook=self.received_event,
                recorder=LegRecorder(self.host, self.id),
                profiles=(self.profile,),
                webrtc=webrtc_options(config, config.rtvbp_request_timeout_s),
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.info(
                "endpoint %s: dialling %s failed: %s", self.id, display_url(self.url), error
            )
            self.finish("failed", describe_failure(error))
            return
        self.voice = voice
        voice.variables = self.host.variables  # the leg may have moved while dialling
        self.rtvbp = voice.session
        assert voice.codec is not None
        self.start_media(voice.codec, voice.send_audio)
        self.host.set_state(self, "connected")
        outcome = await voice.wait_ended()
        self.finish(*(self.end or (outcome.kind, outcome.detail)))

    def rehost(self, host: EndpointHost) -> None:
        """The application's session.get/set follow the leg into its new session."""
        super().rehost(host)
        if self.voice is not None:
            self.voice.variables = host.variables

    def _read_frame(self) -> bytes | None:
        voice = self.voice
        return None if voice is None else voice.read_frame()

    async def _hang_up(self, reason: str) -> None:
        voice = self.voice
        if voice is None:
            return  # still dialling: _shut_down cancels the dial
        self.end = self.end or ("hangup", reason)
        await voice.hangup(reason)

    async def _shut_down(self) -> None:
        task = self._task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self.voice is not None:
            await self.voice.close()
