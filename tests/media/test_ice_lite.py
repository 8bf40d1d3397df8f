"""The ICE-lite agent: valid checks answered, strangers ignored, restarts keep consent."""

from __future__ import annotations

import os

from callbridge.media import stun
from callbridge.media.ice_lite import IceLite

PEER = ("127.0.0.1", 50000)


def check(
    agent: IceLite, password: str, *, ufrag: str | None = None, nominate: bool = False
) -> bytes:
    attributes = [(stun.USERNAME, f"{ufrag or agent.local.ufrag}:peer".encode())]
    if nominate:
        attributes.append((stun.USE_CANDIDATE, b""))
    return stun.build_stun(
        stun.BINDING_REQUEST, os.urandom(12), attributes, integrity_key=password.encode()
    )


def test_valid_check_is_answered_and_nominates() -> None:
    agent = IceLite(0.0, consent_timeout_s=5)
    agent.set_remote("peer")
    reply = agent.receive(check(agent, agent.local.password, nominate=True), PEER, 1.0)
    assert reply is not None and reply.nominated and agent.selected == PEER
    response = stun.parse_stun(reply.response)
    assert response.message_type == stun.BINDING_SUCCESS
    assert response.check_integrity(reply.response, agent.local.password.encode())
    assert stun.XOR_MAPPED_ADDRESS in response.attributes
    assert not agent.consent_expired(5.5)
    assert agent.consent_expired(6.5)


def test_wrong_credentials_and_unknown_peer_are_ignored() -> None:
    agent = IceLite(0.0)
    assert agent.receive(check(agent, agent.local.password), PEER, 0.1) is None  # no remote yet
    agent.set_remote("peer")
    assert agent.receive(check(agent, "wrong-password-wrong-pass"), PEER, 0.2) is None
    assert agent.receive(check(agent, agent.local.password, ufrag="nope"), PEER, 0.3) is None
    assert agent.receive(b"\x00\x01garbage", PEER, 0.4) is None
    assert agent.checks_rejected == 4 and agent.selected is None


def test_restart_accepts_old_credentials_until_new_ones_are_used() -> None:
    agent = IceLite(0.0)
    agent.set_remote("peer")
    old = agent.local
    new = agent.restart()
    assert new != old and agent.restarting
    assert agent.receive(check(agent, old.password, ufrag=old.ufrag), PEER, 1.0) is not None
    assert agent.restarting
    assert agent.receive(check(agent, new.password), PEER, 2.0) is not None
    assert not agent.restarting
    assert agent.receive(check(agent, old.password, ufrag=old.ufrag), PEER, 3.0) is None
