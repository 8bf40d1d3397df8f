"""HTTP access to the recording directory: list, download (with Range) and delete.

`GET /recordings` lists the recordings (`*.pcap`, `*.wav`, `*.flac`, at most 10 directories deep) as
sorted paths relative to `recording_dir`, filtered by the `startsWith` prefix and paged with
`skip` and `limit` (default 100, at most 1000; a value that is not a number gives the default).
`GET /recordings/{path}` serves any file inside the directory (byte ranges as aiohttp serves
them); a path that leads outside it is refused with 403, a missing one with 404, a file above
`max_recording_download_bytes` with 413. `DELETE /recordings/{path}` removes one file. The
control-plane access check runs before these handlers: reads need a read token, DELETE a
control token.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Final

from aiohttp import web

from callbridge.server.config import Settings
from callbridge.server.http_api import json_response

__all__ = ["setup_http_recordings"]

log = logging.getLogger(__name__)

LISTED_SUFFIXES: Final = (".pcap", ".wav", ".flac")
MAX_DEPTH: Final = 10
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
_CONTENT_TYPES: Final = {
    ".pcap": "application/vnd.tcpdump.pcap",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
}


def _number(text: str | None, default: int) -> int:
    try:
        value = int(text) if text is not None else default
    except ValueError:
        return default
    return value if value >= 0 else default


def _walk(root: Path) -> list[str]:
    """Relative paths of the listed files under `root`, at most `MAX_DEPTH` levels down."""
    found: list[str] = []
    for directory, subdirectories, files in os.walk(root, onerror=_raise):
        depth = len(Path(directory).relative_to(root).parts)
        if depth >= MAX_DEPTH:
            subdirectories.clear()
        found.extend(
            (Path(directory) / name).relative_to(root).as_posix()
            for name in files
            if name.endswith(LISTED_SUFFIXES)
        )
    return sorted(found)


def _raise(error: OSError) -> None:
    raise error


class _Recordings:
    def __init__(self, settings: Settings) -> None:
        self.directory = settings.recording_dir
        self.max_bytes = settings.max_recording_download_bytes

    async def list(self, request: web.Request) -> web.Response:
        query = request.query
        skip = _number(query.get("skip"), 0)
        limit = min(_number(query.get("limit"), DEFAULT_LIMIT), MAX_LIMIT)
        prefix = query.get("startsWith", "")
        try:
            exists = self.directory.exists()
            paths = await asyncio.to_thread(_walk, self.directory.resolve()) if exists else []
        except OSError as error:
            log.warning("cannot list %s: %s", self.directory, error)
            return json_response({"error": "cannot read recording directory"}, status=500)
        paths = [path for path in paths if path.startswith(prefix)]
        return json_response(
            {
                "recordings": paths[skip : skip + limit],
                "total": len(paths),
                "skip": skip,
                "limit": limit,
            }
        )

    def _locate(self, request: web.Request) -> Path | web.Response:
        """The file the request names, or the refusal."""
        try:
            root = self.directory.resolve(strict=True)
            path = (root / request.match_info["path"]).resolve(strict=True)
        except FileNotFoundError:
            return json_response({"error": "not found"}, status=404)
        except (OSError, RuntimeError):
            return json_response({"error": "cannot read recording directory"}, status=500)
        if not path.is_relative_to(root):
            return json_response({"error": "forbidden"}, status=403)
        if not path.is_file():
            return json_response({"error": "not found"}, status=404)
        return path

    async def download(self, request: web.Request) -> web.StreamResponse:
        located = self._locate(request)
        if isinstance(located, web.Response):
            return located
        try:
            size = located.stat().st_size
        except OSError:
            return json_response({"error": "not found"}, status=404)
        if size > self.max_bytes:
            return json_response({"error": "file too large"}, status=413)
        content_type = _CONTENT_TYPES.get(located.suffix, "application/octet-stream")
        return web.FileResponse(located, headers={"Content-Type": content_type})

    async def delete(self, request: web.Request) -> web.Response:
        located = self._locate(request)
        if isinstance(located, web.Response):
            return located
        try:
            located.unlink()
        except FileNotFoundError:
            return json_response({"error": "not found"}, status=404)
        except OSError as error:
            log.warning("cannot delete %s: %s", located, error)
            return json_response({"error": "cannot delete recording"}, status=500)
        return json_response({"deleted": True})


def setup_http_recordings(app: web.Application, settings: Settings) -> None:
    """Add `/recordings` (GET), `/recordings/{path}` (GET, DELETE) to `app`."""
    recordings = _Recordings(settings)
    app.router.add_get("/recordings", recordings.list, allow_head=False)
    app.router.add_get("/recordings/", recordings.list, allow_head=False)
    app.router.add_get("/recordings/{path:.+}", recordings.download, allow_head=False)
    app.router.add_delete("/recordings/{path:.+}", recordings.delete)
