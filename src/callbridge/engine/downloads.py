"""The shared URL cache behind file endpoints: download once, play from disk, many sessions.

Files land in `cache_dir` named by the SHA-1 of the URL and request headers (the extension of
the URL path is kept so decoders can guess the format). Concurrent requests for the same key
share one download. Entries are reference-counted by `CacheLease`s; an unreferenced entry lives
`ttl_s` more seconds (0: deleted on release) and `cleanup` removes what expired. At most
`max_concurrent` downloads run at once; each has a whole-download deadline and a size cap
(checked against Content-Length and while streaming). Times are monotonic seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final
from urllib.parse import urlsplit

import aiohttp

__all__ = ["CacheLease", "DownloadCache", "DownloadError"]

_CONNECT_TIMEOUT_S: Final = 10.0
_MAX_REDIRECTS: Final = 5
_CHUNK_BYTES: Final = 64 * 1024
_MAX_ENTRIES: Final = 1000
_FRESH_GRACE_S: Final = 5.0
"""A finished download nobody holds yet is kept at least this long (its waiters are waking)."""

logger = logging.getLogger(__name__)


class DownloadError(Exception):
    """A download failed: HTTP status, size, timeout or network error (message says which)."""


@dataclass
class _Entry:
    path: Path
    references: int
    ttl_s: float
    released_at: float


class CacheLease:
    """One user's hold on a cached file; `release` once playback no longer needs it."""

    __slots__ = ("_cache", "_key", "path")

    def __init__(self, cache: DownloadCache, key: str, path: Path) -> None:
        self._cache: DownloadCache | None = cache
        self._key = key
        self.path = path

    def release(self) -> None:
        """Idempotent."""
        cache, self._cache = self._cache, None
        if cache is not None:
            cache._release(self._key)


def cache_key(url: str, headers: dict[str, str] | None) -> str:
    """SHA-1 hex of the URL and the sorted request headers."""
    digest = hashlib.sha1(url.encode())
    for name, value in sorted((headers or {}).items()):
        digest.update(f"\n{name.lower()}: {value}".encode())
    return digest.hexdigest()


class DownloadCache:
    """Downloads URL sources into `cache_dir` with dedup, a concurrency cap and ref counts."""

    def __init__(self, cache_dir: Path, *, max_concurrent: int, max_bytes: int) -> None:
        self.cache_dir = cache_dir
        self.max_bytes = max_bytes
        self.requests = 0
        """HTTP requests started (dedup shows here)."""
        self._semaphore = asyncio.Semaphore(max_concurrent)
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, asyncio.Task[Path]] = {}
        self._client: aiohttp.ClientSession | None = None
        self._prepared = False

    def prepare(self) -> None:
        """Create the directory and delete files left from an earlier run (once)."""
        if self._prepared:
            return
        self._prepared = True
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        for path in self.cache_dir.iterdir():
            if path.is_file():
                path.unlink(missing_ok=True)

    async def acquire(
        self, url: str, headers: dict[str, str] | None, timeout_s: float, ttl_s: float
    ) -> CacheLease:
        """The cached file of `url`, downloading it unless cached or already downloading.

        Raises DownloadError; the deadline covers waiting for a shared download too.
        """
        self.prepare()
        key = cache_key(url, headers)
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    entry = self._entries.get(key)
                    if entry is not None and entry.path.exists():
                        entry.references += 1
                        entry.ttl_s = ttl_s
                        return CacheLease(self, key, entry.path)
                    task = self._inflight.get(key)
                    if task is None:
                        task = asyncio.create_task(self._download(key, url, headers, timeout_s))
                        self._inflight[key] = task
                        task.add_done_callback(lambda done: self._download_done(key, done))
                    await asyncio.shield(task)
        except TimeoutError:
            raise DownloadError(f"download timed out after {timeout_s * 1000:.0f} ms") from None

    def _download_done(self, key: str, task: asyncio.Task[Path]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled() and task.exception() is None:
            path = task.result()
            self._entries[key] = _Entry(path, 0, 0.0, time.monotonic() + _FRESH_GRACE_S)
        elif not task.cancelled():
            task.exception()  # retrieved: waiters got it through shield

    async def _download(
        self, key: str, url: str, headers: dict[str, str] | None, timeout_s: float
    ) -> Path:
        part = self.cache_dir / f"{key}.part"
        suffix = PurePosixPath(urlsplit(url).path).suffix[:10]
        final = self.cache_dir / f"{key}{suffix}"
        try:
            async with asyncio.timeout(timeout_s), self._semaphore:
                self.requests += 1
                client = self._client_session()
                async with client.get(
                    url,
                    headers=headers,
                    max_redirects=_MAX_REDIRECTS,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=_CONNECT_TIMEOUT_S),
                ) as response:
                    if not 200 <= response.status < 300:
                        raise DownloadError(f"HTTP {response.status} from {url}")
                    length = response.content_length
                    if length is not None and length > self.max_bytes:
                        raise DownloadError(f"file too large: {length} > {self.max_bytes} bytes")
                    size = 0
                    with part.open("wb") as handle:
                        async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
                            size += len(chunk)
                            if size > self.max_bytes:
                                raise DownloadError(f"file too large: over {self.max_bytes} bytes")
                            handle.write(chunk)
            part.replace(final)
            return final
        except TimeoutError:
            part.unlink(missing_ok=True)
            raise DownloadError(f"download timed out after {timeout_s * 1000:.0f} ms") from None
        except (aiohttp.ClientError, OSError, ValueError) as error:
            part.unlink(missing_ok=True)
            raise DownloadError(f"download failed: {error or type(error).__name__}") from None
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    def _client_session(self) -> aiohttp.ClientSession:
        if self._client is None or self._client.closed:
            self._client = aiohttp.ClientSession()
        return self._client

    def _release(self, key: str) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.references -= 1
        if entry.references <= 0:
            entry.references = 0
            entry.released_at = time.monotonic()
            if entry.ttl_s <= 0:
                self._delete(key)

    def _delete(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            entry.path.unlink(missing_ok=True)

    def cleanup(self, now: float) -> None:
        """Delete unreferenced entries past their ttl, and the oldest beyond 1000 entries."""
        idle = [
            (entry.released_at, key) for key, entry in self._entries.items() if not entry.references
        ]
        for released_at, key in idle:
            if now >= released_at + self._entries[key].ttl_s:
                self._delete(key)
        excess = len(self._entries) - _MAX_ENTRIES
        if excess > 0:
            for _, key in sorted(idle)[:excess]:
                self._delete(key)

    async def close(self) -> None:
        """Cancel running downloads and close the HTTP client (files stay until next start)."""
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.close()
            self._client = None
