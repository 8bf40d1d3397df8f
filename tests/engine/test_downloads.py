"""The URL cache: dedup, size cap, ttl and cleanup, errors; against a local aiohttp server."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from callbridge.engine.downloads import DownloadCache, DownloadError, cache_key
from tests.conftest import serve_app


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str]]]:
    requests: list[str] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        requests.append(request.path)
        if request.path == "/big.bin":
            response = web.StreamResponse()  # no Content-Length: the cap applies while streaming
            await response.prepare(request)
            for _ in range(8):
                await response.write(b"x" * 1024)
            return response
        if request.path == "/small.bin":
            await asyncio.sleep(0.05)
            return web.Response(body=b"data")
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/{name}", serve)
    async with serve_app(app) as address:
        yield f"http://{address}", requests


async def test_dedup_ttl_and_cleanup(tmp_path: Path, server: tuple[str, list[str]]) -> None:
    base, requests = server
    (tmp_path / "stale.bin").parent.mkdir(exist_ok=True)
    (tmp_path / "stale.bin").write_bytes(b"old")
    cache = DownloadCache(tmp_path, max_concurrent=2, max_bytes=4096)
    try:
        leases = await asyncio.gather(
            *(cache.acquire(f"{base}/small.bin", None, 5, 60) for _ in range(3))
        )
        assert not (tmp_path / "stale.bin").exists()  # emptied at first use
        assert requests == ["/small.bin"] and cache.requests == 1
        path = leases[0].path
        assert path.read_bytes() == b"data" and path.suffix == ".bin"
        assert path.name.startswith(cache_key(f"{base}/small.bin", None))
        for lease in leases:
            lease.release()
            lease.release()  # idempotent
        cache.cleanup(time.monotonic())
        assert path.exists()  # within its ttl
        cache.cleanup(time.monotonic() + 61)
        assert not path.exists()
        again = await cache.acquire(f"{base}/small.bin", {"X-Key": "1"}, 5, 0)
        assert cache.requests == 2  # other headers, other entry
        again.release()  # ttl 0: deleted on release
        assert not again.path.exists()
    finally:
        await cache.close()


async def test_errors(tmp_path: Path, server: tuple[str, list[str]]) -> None:
    base, _ = server
    cache = DownloadCache(tmp_path, max_concurrent=1, max_bytes=4096)
    try:
        with pytest.raises(DownloadError, match="HTTP 503"):
            await cache.acquire(f"{base}/other.bin", None, 5, 60)
        with pytest.raises(DownloadError, match="too large"):
            await cache.acquire(f"{base}/big.bin", None, 5, 60)
        with pytest.raises(DownloadError, match="download failed"):
            await cache.acquire("http://127.0.0.1:9/x.bin", None, 5, 60)
        with pytest.raises(DownloadError, match="timed out"):
            await cache.acquire(f"{base}/small.bin", None, 0.01, 60)
        assert [name for name in os.listdir(tmp_path) if name.endswith(".part")] == []
    finally:
        await cache.close()
