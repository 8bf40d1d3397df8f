"""The session manager: limits, orphan/attach races, shutdown, and no leaked tasks or sockets."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from callbridge.engine.bridge_endpoint import bridge
from callbridge.engine.errors import EngineError
from callbridge.engine.file_endpoint import create_with_file
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer, create_offer
from callbridge.engine.session import MediaSession
from callbridge.engine.tone_endpoint import create_tone
from tests.engine.engine_peers import EventLog, engine_config


async def started(tmp_path: Path, **overrides: object) -> SessionManager:
    engine = SessionManager(engine_config(tmp_path, **overrides))
    await engine.start()
    return engine


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_max_sessions_is_exact_under_concurrency(tmp_path: Path) -> None:
    engine = await started(tmp_path, max_sessions=5)
    try:

        async def create() -> MediaSession | EngineError:
            await asyncio.sleep(0)
            try:
                return engine.create_session(EventLog())
            except EngineError as error:
                return error

        results = await asyncio.gather(*(create() for _ in range(10)))
        created = [result for result in results if isinstance(result, MediaSession)]
        refused = [result for result in results if isinstance(result, EngineError)]
        assert len(created) == 5
        assert {error.code for error in refused} == {"MAX_SESSIONS_REACHED"}
        await created[0].destroy()
        await created[0].destroy()  # idempotent
        engine.create_session(EventLog())
        assert engine.metrics.sessions_active == 5 and engine.metrics.sessions_total == 6
    finally:
        await engine.shutdown(0)


async def test_attach_only_orphaned_sessions(tmp_path: Path) -> None:
    engine = await started(tmp_path, disconnect_timeout_s=5)
    try:
        session = engine.create_session(EventLog())
        with pytest.raises(EngineError) as error:
            engine.attach(session.id, EventLog())
        assert error.value.code == "SESSION_NOT_ORPHANED"
        with pytest.raises(EngineError) as error:
            engine.attach("00000000-0000-0000-0000-000000000000", EventLog())
        assert error.value.code == "SESSION_NOT_FOUND"
        engine.orphan(session)
        assert session.state == "orphaned" and session.summary()["state"] == "orphaned"
        assert engine.attach(session.id, EventLog()) is session
        assert session.state == "active"
    finally:
        await engine.shutdown(0)


async def test_orphan_timer_destroys_and_keeps_endpoints_until_then(tmp_path: Path) -> None:
    engine = await started(tmp_path, disconnect_timeout_s=0.1)
    try:
        session = engine.create_session(EventLog())
        await create_from_offer(session, "", "sendrecv")
        engine.orphan(session)
        await asyncio.sleep(0.02)
        assert session.alive and len(session.endpoints) == 1
        await asyncio.sleep(0.2)
        assert not session.alive and engine.sessions() == []
        await asyncio.sleep(0.01)
        assert engine.ports.in_use == 0
    finally:
        await engine.shutdown(0)


async def test_rapid_orphan_attach_cycles_leave_one_active_session(tmp_path: Path) -> None:
    engine = await started(tmp_path, disconnect_timeout_s=0.08)
    try:
        session = engine.create_session(EventLog())
        for _ in range(5):
            engine.orphan(session)
            await asyncio.sleep(0.05)
            engine.attach(session.id, EventLog())
        await asyncio.sleep(0.2)  # every earlier timer has fired by now
        assert [s.state for s in engine.sessions()] == ["active"]
        assert session.alive
    finally:
        await engine.shutdown(0)


async def test_shutdown_refuses_new_and_destroys_orphans_at_once(tmp_path: Path) -> None:
    engine = await started(tmp_path, disconnect_timeout_s=30)
    orphan = engine.create_session(EventLog())
    engine.orphan(orphan)
    active = engine.create_session(EventLog())
    shutdown = asyncio.create_task(engine.shutdown(5))
    await asyncio.sleep(0.05)
    assert not orphan.alive and active.alive
    with pytest.raises(EngineError) as error:
        engine.create_session(EventLog())
    assert error.value.code == "SHUTTING_DOWN"
    engine.orphan(active)  # orphaned during the drain: destroyed at once
    await asyncio.wait_for(shutdown, 1)
    assert engine.sessions() == [] and not engine.clock.running


async def test_shutdown_wait_is_bounded(tmp_path: Path) -> None:
    engine = await started(tmp_path)
    session = engine.create_session(EventLog())
    await engine.shutdown(0.05)
    assert not session.alive


async def test_no_leaked_tasks_or_sockets(tmp_path: Path) -> None:
    before_descriptors = open_descriptors()
    before_tasks = asyncio.all_tasks()
    engine = await started(tmp_path)
    media_dir = tmp_path / "media"
    media_dir.mkdir()
    for _ in range(3):
        session = engine.create_session(EventLog())
        await create_from_offer(session, "", "sendrecv")
        await create_offer(session, "rtp", "sendrecv", None, False)
        await create_tone(session, "busy", None, None)
        await create_with_file(session, "http://127.0.0.1:9/none.wav", timeout_ms=50)
        other = engine.create_session(EventLog())
        await bridge(session, other.id, "sendrecv", engine.get)
        await session.destroy()
        engine.orphan(other)
    await engine.shutdown(0)
    await asyncio.sleep(0.05)
    assert asyncio.all_tasks() == before_tasks
    assert open_descriptors() == before_descriptors
    assert engine.ports.in_use == 0
