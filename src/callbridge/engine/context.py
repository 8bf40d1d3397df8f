"""What every session of one worker shares: config, clock, ports, metrics, the URL cache.

The manager owns these and hands one `EngineContext` to each session, so sessions and
endpoints never import the manager (no cycle) and tests can see exactly what a session uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from callbridge.engine.clock import MediaClock
from callbridge.engine.config import EngineConfig
from callbridge.engine.downloads import DownloadCache
from callbridge.engine.metrics import EngineMetrics
from callbridge.engine.ports import PortAllocator

if TYPE_CHECKING:
    from callbridge.engine.session import MediaSession

__all__ = ["EngineContext"]


@dataclass
class EngineContext:
    config: EngineConfig
    clock: MediaClock
    ports: PortAllocator
    metrics: EngineMetrics
    downloads: DownloadCache
    find_session: Callable[[str], MediaSession | None]
    """Another live session by id (bridge targets)."""
    session_destroyed: Callable[[MediaSession], None]
    """Called once by a session when it is torn down."""
