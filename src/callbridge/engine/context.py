"""What every session of one worker shares: config, clock, ports, metrics, the URL cache, the
shared file players.

The manager owns these and hands one `EngineContext` to each session, so sessions and
endpoints never import the manager and tests can see exactly what a session uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from callbridge.engine.clock import MediaClock
from callbridge.engine.config import EngineConfig
from callbridge.engine.downloads import DownloadCache
from callbridge.engine.forwarding import NATIVE_FORWARDING, ForwardingPlane
from callbridge.engine.metrics import EngineMetrics
from callbridge.engine.ports import PortAllocator
from callbridge.engine.shared_playback import SharedPlayback

__all__ = ["EngineContext"]


@dataclass
class EngineContext:
    config: EngineConfig
    clock: MediaClock
    ports: PortAllocator
    metrics: EngineMetrics
    downloads: DownloadCache
    session_destroyed: Callable[[str], None]
    """Called once with a session's id when that session is torn down."""
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    """Background work that outlives a call site (RTVBP dials and hang-ups); the manager waits
    for it at shutdown."""
    shared_playback: SharedPlayback = field(default_factory=SharedPlayback)
    """`shared: true` file playback: one decode per source for every session."""
    plane: ForwardingPlane | None = None
    """The native forwarding plane, made by the first RTP endpoint that uses it."""

    def forwarding_plane(self) -> ForwardingPlane | None:
        """The plane for new RTP endpoints; None when it is off (config) or not built."""
        if not (self.config.native_forwarding and NATIVE_FORWARDING):
            return None
        if self.plane is None:
            self.plane = ForwardingPlane()
        return self.plane

    def close_forwarding(self) -> None:
        """At shutdown, once the sessions are gone."""
        if self.plane is not None:
            self.plane.close()
            self.plane = None

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coroutine` as a tracked background task (never per frame)."""
        task = asyncio.create_task(coroutine, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task
