"""callbridge: a real-time voice bridge speaking RTVBP in both roles, and a media session server.

The SDK in one import::

    import callbridge

    app = callbridge.Application()

    @app.call
    async def agent(call: callbridge.Call) -> None:
        async for frame in call.audio():
            await call.send_audio(frame)
"""

from callbridge.rtvbp.application import Application, Call
from callbridge.rtvbp.babelforce_v1 import AudioCodec, CallInfo, DtmfEvent
from callbridge.rtvbp.codecs import first_l16, prefer_sample_rate
from callbridge.rtvbp.errors import (
    RemoteError,
    RequestTimeoutError,
    RtvbpError,
    SessionClosedError,
)
from callbridge.rtvbp.voice import EndReason, Recorder, VoiceCall

__version__ = "0.1.0"

__all__ = [
    "Application",
    "AudioCodec",
    "Call",
    "CallInfo",
    "DtmfEvent",
    "EndReason",
    "Recorder",
    "RemoteError",
    "RequestTimeoutError",
    "RtvbpError",
    "SessionClosedError",
    "VoiceCall",
    "__version__",
    "first_l16",
    "prefer_sample_rate",
]
