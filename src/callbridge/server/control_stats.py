"""Control methods of the `stats.*` family: the periodic `stats` event of the bound session.

`stats.subscribe {interval_ms 500..3600000 (5000)}` starts it or changes its interval (null
params are INVALID_PARAMS, as in rtpbridge); `stats.unsubscribe` ignores its params and always
answers `{}`.
"""

from __future__ import annotations

import time
from typing import Annotated

import msgspec

from callbridge.engine import stats
from callbridge.server import control_messages as wire
from callbridge.server.control_context import ControlContext

__all__ = ["StatsSubscribeParams", "stats_subscribe", "stats_unsubscribe"]


class StatsSubscribeParams(msgspec.Struct):
    interval_ms: Annotated[int, msgspec.Meta(ge=500, le=3_600_000)] = 5000


async def stats_subscribe(context: ControlContext, raw: msgspec.Raw) -> object:
    params = context.params(raw, StatsSubscribeParams)
    stats.subscribe_stats(context.live(), params.interval_ms, time.monotonic())
    return wire.EMPTY


async def stats_unsubscribe(context: ControlContext, raw: msgspec.Raw) -> object:
    stats.unsubscribe_stats(context.live())
    return wire.EMPTY
