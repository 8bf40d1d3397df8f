"""Wiring of the decoded path: shared encoders, mix stages, carried-over state."""

from __future__ import annotations

from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.routing import RouteMode
from callbridge.engine.tone_endpoint import create_tone
from tests.engine.engine_peers import EventLog, RtpPeer, manager

__all__ = ["manager"]


async def test_identical_destinations_share_one_encoder(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    await create_tone(session, "beep", None, None)
    peers = []
    for _ in range(3):
        peer = await RtpPeer.open()
        await create_from_offer(session, peer.offer("opus"), "recvonly")
        peers.append(peer)
    groups = list(session.plan.groups.values())
    assert len(groups) == 1 and len(groups[0].destinations) == 3
    assert session.plan.stages == ()
    for peer in peers:
        peer.close()


async def test_conference_uses_one_mix_stage_per_rate_and_keeps_encoders(
    manager: SessionManager,
) -> None:
    session = manager.create_session(EventLog())
    ids = []
    for codecs in ("pcmu", "pcmu", "opus"):
        peer = await RtpPeer.open()
        endpoint_id, _ = await create_from_offer(session, peer.offer(codecs), "sendrecv")
        ids.append(endpoint_id)
        peer.close()
    assert {session.plan.table.mode(endpoint_id) for endpoint_id in ids} == {RouteMode.MIX}
    # 8 kHz: each PCMU party hears the other PCMU party and Opus; 48 kHz: Opus hears both.
    assert sorted(len(stage.inputs) for stage in session.plan.stages) == [2, 3]
    encoders = {key: group.encoder for key, group in session.plan.groups.items()}
    tone_id = await create_tone(session, "ringing", None, None)
    for key, group in session.plan.groups.items():
        if key in encoders:
            assert group.encoder is encoders[key]
    await session.remove_endpoint(tone_id)
    await session.remove_endpoint(ids[2])
    assert {session.plan.table.mode(endpoint_id) for endpoint_id in ids[:2]} == {
        RouteMode.PASSTHROUGH
    }
    assert session.plan.stages == ()
