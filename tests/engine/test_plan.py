"""Wiring of the decoded path: shared encoders, mix stages, carried-over state."""

from __future__ import annotations

import pytest

from callbridge.engine import pipeline
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.engine.plan import choose_coding_rates
from callbridge.engine.routing import RouteMode
from callbridge.engine.rtp_endpoint import RtpEndpoint
from callbridge.engine.rtvbp_control import preferred_rate
from callbridge.engine.tone_endpoint import create_tone
from callbridge.media.opus import OpusEncoder
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
    for codecs in ("pcmu", "pcmu", "g722"):
        peer = await RtpPeer.open()
        endpoint_id, _ = await create_from_offer(session, peer.offer(codecs), "sendrecv")
        ids.append(endpoint_id)
        peer.close()
    assert {session.plan.table.mode(endpoint_id) for endpoint_id in ids} == {RouteMode.MIX}
    # 8 kHz: each PCMU party hears the other PCMU party and G.722; 16 kHz: G.722 hears both.
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


def _opus_rates(session: object) -> list[int]:
    endpoints = session.endpoints.values()  # type: ignore[attr-defined]
    return sorted(
        endpoint.send_spec.sample_rate
        for endpoint in endpoints
        if isinstance(endpoint, RtpEndpoint)
        and endpoint.send_spec is not None
        and endpoint.send_spec.name == "opus"
    )


async def test_opus_codes_at_the_rate_of_its_partners(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_resampler(source: int, target: int) -> None:
        raise AssertionError(f"resampler {source} -> {target} Hz built")

    session = manager.create_session(EventLog())
    peers = [await RtpPeer.open() for _ in range(4)]
    monkeypatch.setattr(pipeline, "Resampler", no_resampler)
    phone_id, _ = await create_from_offer(session, peers[0].offer("pcmu"), "sendrecv")
    opus_id, _ = await create_from_offer(session, peers[1].offer("opus"), "sendrecv")
    assert _opus_rates(session) == [8000]
    assert {key[:2] for key in session.plan.groups} == {
        ("transcode", phone_id),
        ("transcode", opus_id),
    }
    opus = session.endpoints[opus_id]
    assert opus.output_format is not None
    assert opus.output_format.key == ("opus", 8000, 20)
    assert opus.output_format.timestamp_step == 960  # the wire keeps Opus's 48 kHz clock
    (encoder,) = [
        group.encoder for key, group in session.plan.groups.items() if key[2][0] == "opus"
    ]
    assert isinstance(encoder, OpusEncoder)
    assert (encoder.sample_rate, encoder.bit_rate) == (8000, manager.config.opus_bit_rate)
    assert preferred_rate(session) == 48000  # Opus is full band for a joining RTVBP leg
    await session.remove_endpoint(phone_id)
    g722_id, _ = await create_from_offer(session, peers[2].offer("g722"), "sendrecv")
    assert _opus_rates(session) == [16000]
    monkeypatch.undo()
    await session.remove_endpoint(g722_id)
    await create_from_offer(session, peers[0].offer("pcmu"), "sendrecv")
    await create_from_offer(session, peers[3].offer("opus"), "sendrecv")
    # each Opus leg hears the other one: full band for both, the phone is resampled
    assert _opus_rates(session) == [48000, 48000]
    for peer in peers:
        peer.close()


async def test_a_tap_raises_the_rate_of_the_opus_leg_it_taps(manager: SessionManager) -> None:
    session = manager.create_session(EventLog())
    peers = [await RtpPeer.open() for _ in range(2)]
    await create_from_offer(session, peers[0].offer("pcmu"), "sendrecv")
    opus_id, _ = await create_from_offer(session, peers[1].offer("opus"), "sendrecv")
    assert _opus_rates(session) == [8000]

    class Recorder:
        def on_frame(self, pcm: bytes, now: float) -> None:
            """Only its rate matters here."""

    choose_coding_rates(session.endpoints, {opus_id: [(16000, Recorder())]})
    assert _opus_rates(session) == [16000]  # a 16 kHz recording of the Opus leg loses no band
    choose_coding_rates(session.endpoints, {opus_id: [(24000, Recorder())]})
    assert _opus_rates(session) == [24000]
    for peer in peers:
        peer.close()
