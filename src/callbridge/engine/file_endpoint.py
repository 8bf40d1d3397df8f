"""A file playback endpoint: local files under `media_dir`, or http(s) URLs through the cache.

One 20 ms frame is decoded per clock tick (`AudioFileReader` streams; no file is loaded whole),
at 48000 Hz so wideband destinations keep the file's quality. Always sendonly.

States: local files start `playing`; URLs start `buffering`, download in the background and go
`playing` (with `endpoint.state_changed`), or on failure are removed with
`endpoint.file.finished {reason:"error"}`. Pause/resume switch `playing` <-> `paused`. After the
last loop: `endpoint.file.finished {reason:"completed"}` and state `finished` (no state event).

`shared: true` is accepted and played as an unshared endpoint: every endpoint decodes the
file itself (the cache still shares the download).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Final

from callbridge.engine.downloads import CacheLease, DownloadError
from callbridge.engine.endpoint import Endpoint, EndpointHost
from callbridge.engine.errors import INVALID_PARAMS, EngineError, endpoint_error
from callbridge.engine.session import MediaSession
from callbridge.media.audiofile import AudioFileReader
from callbridge.media.errors import MediaError

__all__ = ["FILE_SAMPLE_RATE", "FileEndpoint", "confine_path", "create_with_file"]

FILE_SAMPLE_RATE: Final = 48000


def confine_path(media_dir: Path | None, source: str) -> Path:
    """The canonical path of `source` (relative to `media_dir`, or absolute) inside `media_dir`.

    Symlinks are resolved before the check, so a link pointing outside is refused; the check
    comes before the existence test, so nothing is revealed about files outside.
    """
    if media_dir is None:
        raise endpoint_error("Local file playback is disabled (no media_dir configured)")
    root = media_dir.resolve()
    candidate = Path(source)
    if not candidate.is_absolute():
        candidate = root / candidate
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError) as error:
        raise endpoint_error(f"Invalid file path: {error}") from None
    if not resolved.is_relative_to(root):
        raise endpoint_error("File path is outside media_dir")
    if not resolved.is_file():
        raise endpoint_error(f"File not found: {source}")
    return resolved


async def create_with_file(
    session: MediaSession,
    source: str,
    *,
    start_ms: int = 0,
    loop_count: int | None = 0,
    cache_ttl_secs: int = 300,
    shared: bool = False,
    timeout_ms: int = 10000,
    headers: dict[str, str] | None = None,
    gain_db: float = 0.0,
) -> str:
    """`endpoint.create_with_file` (local path or http(s) URL); `shared` plays unshared."""
    session.touch()
    if loop_count is not None and not 0 <= loop_count <= 10000:
        raise EngineError(INVALID_PARAMS, "loop_count must be 0..10000 or null")
    if not 1 <= timeout_ms <= 60000:
        raise EngineError(INVALID_PARAMS, "timeout_ms must be 1..60000")
    if start_ms < 0:
        raise EngineError(INVALID_PARAMS, "start_ms must not be negative")
    with session.slot() as slot:
        endpoint = FileEndpoint.create(
            session,
            source,
            start_ms=start_ms,
            loop_count=loop_count,
            cache_ttl_s=cache_ttl_secs,
            timeout_s=timeout_ms / 1000,
            headers=headers,
            gain_db=gain_db,
        )
        slot.add(endpoint)
    endpoint.started()
    return endpoint.id


class FileEndpoint(Endpoint):
    kind = "file"
    needs_tick = True
    generates = True

    def __init__(
        self,
        host: EndpointHost,
        state: str,
        *,
        start_ms: int,
        loop_count: int | None,
        gain_db: float,
    ) -> None:
        super().__init__(host, "sendonly", state)
        self.start_ms = start_ms
        self.loops_left = loop_count
        """Extra plays still to come; None loops forever."""
        self.gain_db = gain_db
        self._reader: AudioFileReader | None = None
        self._lease: CacheLease | None = None
        self._download: asyncio.Task[None] | None = None
        self._url: str | None = None
        self._url_options: dict[str, Any] = {}

    @classmethod
    def create(
        cls,
        host: EndpointHost,
        source: str,
        *,
        start_ms: int,
        loop_count: int | None,
        cache_ttl_s: float,
        timeout_s: float,
        headers: dict[str, str] | None,
        gain_db: float,
    ) -> FileEndpoint:
        """A local file opened now (errors raise), or a URL endpoint that downloads later."""
        if source.lower().startswith(("http://", "https://")):
            endpoint = cls(
                host, "buffering", start_ms=start_ms, loop_count=loop_count, gain_db=gain_db
            )
            endpoint._url = source
            endpoint._url_options = {
                "headers": headers,
                "timeout_s": timeout_s,
                "ttl_s": cache_ttl_s,
            }
            return endpoint
        path = confine_path(host.context.config.media_dir, source)
        endpoint = cls(host, "playing", start_ms=start_ms, loop_count=loop_count, gain_db=gain_db)
        endpoint._reader = endpoint._open(path)
        return endpoint

    def _open(self, path: Path) -> AudioFileReader:
        try:
            return AudioFileReader(path, FILE_SAMPLE_RATE, self.start_ms, self.gain_db)
        except (MediaError, OSError, ValueError) as error:
            raise endpoint_error(f"Cannot play file: {error}") from None

    @property
    def source_rate(self) -> int:
        return FILE_SAMPLE_RATE

    @property
    def stats_codec(self) -> str:
        return f"pcm/{FILE_SAMPLE_RATE}Hz"

    def started(self) -> None:
        """The endpoint is in its session: start the download of a URL source."""
        if self._url is not None and self._download is None:
            self._download = asyncio.create_task(self._fetch(self._url))

    async def _fetch(self, url: str) -> None:
        options = self._url_options
        downloads = self.host.context.downloads
        try:
            lease = await downloads.acquire(
                url, options["headers"], options["timeout_s"], options["ttl_s"]
            )
        except DownloadError as error:
            self._fail(str(error))
            return
        if self.closed:
            lease.release()
            return
        try:
            reader = self._open(lease.path)
        except Exception as error:
            lease.release()
            self._fail(getattr(error, "message", str(error)))
            return
        self._lease = lease
        self._reader = reader
        self.host.set_state(self, "playing")

    def _fail(self, message: str) -> None:
        """A URL source that cannot play: removed, with `endpoint.file.finished` error."""
        host = self.host
        if self.closed or not host.alive:
            return
        host.remove(self)
        host.emit(
            "endpoint.file.finished",
            {"endpoint_id": self.id, "reason": "error", "error": message},
        )

    # -- control -------------------------------------------------------------------------------

    def seek(self, position_ms: int) -> None:
        if self.state not in ("playing", "paused") or self._reader is None:
            raise endpoint_error(f"Cannot seek in state {self.state.capitalize()}")
        try:
            self._reader.seek(max(0, position_ms))
        except (MediaError, ValueError) as error:
            raise endpoint_error(f"Seek failed: {error}") from None

    def pause(self) -> None:
        if self.state == "paused":
            return
        if self.state != "playing":
            raise endpoint_error(f"Cannot pause in state {self.state.capitalize()}")
        self.host.set_state(self, "paused")

    def resume(self) -> None:
        if self.state == "playing":
            return
        if self.state != "paused":
            raise endpoint_error(f"Cannot resume in state {self.state.capitalize()}")
        self.host.set_state(self, "playing")

    # -- clock ---------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        reader = self._reader
        if self.state != "playing" or reader is None:
            return
        try:
            frame = reader.read_frame()
            if frame is None and self.loops_left != 0:
                if self.loops_left is not None:
                    self.loops_left -= 1
                reader.seek(self.start_ms)
                frame = reader.read_frame()
        except MediaError as error:
            self._finish("error", str(error))
            return
        if frame is None:
            self._finish("completed", None)
            return
        self.produce(frame, now)

    def _finish(self, reason: str, error: str | None) -> None:
        self.host.set_state(self, "finished", event=False)
        data: dict[str, Any] = {"endpoint_id": self.id, "reason": reason}
        if error is not None:
            data["error"] = error
        self.host.emit("endpoint.file.finished", data)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self._download is not None and not self._download.done():
            self._download.cancel()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._lease is not None:
            self._lease.release()
            self._lease = None
