"""Fixtures shared across the suite: real servers on loopback, task-leak checks."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from callbridge.rtvbp.application import Application
from callbridge.rtvbp.picows_listener import start_listener


@asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """Run `app` on a real aiohttp server on 127.0.0.1 (a free port); yields "host:port"."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"{host}:{port}"
    finally:
        await runner.cleanup()


APPLICATION_LISTENER = {"stack": "aiohttp"}
"""Which listener `serve_application` starts; a module's `application_listener` fixture
(parametrized over both) sets it for each test."""


@asynccontextmanager
async def serve_application(application: Application, path: str = "/rtvbp") -> AsyncIterator[str]:
    """Run `application` on a real server on 127.0.0.1 (aiohttp, or the picows listener when
    `APPLICATION_LISTENER` says so); yields its ws:// URL."""
    if APPLICATION_LISTENER["stack"] == "picows":
        listener = await start_listener(application.decide_upgrade, [("127.0.0.1", 0)])
        host, port = listener.addresses[0]
        try:
            yield f"ws://{host}:{port}{path}"
        finally:
            await listener.close()
        return
    app = web.Application()
    app.router.add_get(path, application.websocket_handler)
    async with serve_app(app) as address:
        yield f"ws://{address}{path}"


@pytest.fixture(params=["aiohttp", "picows"])
def application_listener(request: pytest.FixtureRequest) -> Iterator[str]:
    """Use as autouse in a module: every `serve_application` there runs on both listeners."""
    APPLICATION_LISTENER["stack"] = request.param
    try:
        yield request.param
    finally:
        APPLICATION_LISTENER["stack"] = "aiohttp"


def free_port_range(pairs: int) -> tuple[int, int]:
    """An even-based range of `pairs` pairs that is bindable right now (below ephemeral ports)."""
    for _ in range(200):
        start = random.randrange(20000, 30000 - 2 * pairs, 2)
        probes: list[socket.socket] = []
        try:
            for port in range(start, start + 2 * pairs):
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        return start, start + 2 * pairs - 1
    raise RuntimeError("no free port range found")


async def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll `condition` until true; fails the test with a clear message on timeout."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


async def output_settled(path: Path, quiet: float = 0.5, timeout: float = 10.0) -> None:
    """Wait until an external writer (an ffmpeg receiver) has stopped growing `path` for `quiet` s.

    A fixed sleep loses the tail of the audio when a loaded machine slows the writer down.
    """
    size, quiet_since = -1, asyncio.get_running_loop().time()
    async with asyncio.timeout(timeout):
        while True:
            now = asyncio.get_running_loop().time()
            current = _size(path)
            if current != size:
                size, quiet_since = current, now
            elif now - quiet_since >= quiet:
                return
            await asyncio.sleep(0.05)


async def no_leaked_tasks(before: set[asyncio.Task[object]], grace: float = 2.0) -> None:
    """Every task started since `before` ends within `grace` seconds."""
    current = asyncio.current_task()

    def leftover() -> set[asyncio.Task[object]]:
        return {
            t for t in asyncio.all_tasks() if t not in before and t is not current and not t.done()
        }

    try:
        await wait_until(lambda: not leftover(), grace)
    except TimeoutError:
        pytest.fail(f"leaked tasks: {leftover()}")


@pytest.fixture
async def task_baseline() -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Call the yielded function at the end of a test to assert no task leaked."""
    before = set(asyncio.all_tasks())

    async def check() -> None:
        await no_leaked_tasks(before)

    yield check
