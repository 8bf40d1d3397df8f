"""Profiles and Sec-WebSocket-Protocol negotiation: the 7 vectors and the policy around them."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbridge.rtvbp import babelforce_v1, demo_v1
from callbridge.rtvbp.errors import NegotiationError
from callbridge.rtvbp.profiles import PROFILES, Negotiated, negotiate, parse_offer, profile_for
from tests.rtvbp.vectors import negotiation_vectors

VECTORS = negotiation_vectors()


def test_vector_counts() -> None:
    assert (len(VECTORS["valid"]), len(VECTORS["invalid"])) == (5, 2)


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda vector: vector["name"])
def test_valid_negotiation_vector(vector: dict[str, Any]) -> None:
    negotiated = negotiate(vector["offered"])
    assert negotiated.token == vector["selectedToken"]
    assert negotiated.profile.token == vector["effectiveProfile"]


@pytest.mark.parametrize("vector", VECTORS["invalid"], ids=lambda vector: vector["name"])
def test_invalid_negotiation_vector(vector: dict[str, Any]) -> None:
    with pytest.raises(NegotiationError) as raised:
        negotiate(vector["offered"])
    assert raised.value.kind == vector["error"]


def test_registry() -> None:
    assert [profile.token for profile in PROFILES] == [
        "rtvbp.v1",
        "rtvbp.demo.v1",
        "rtvbp.webrtc.v1",
    ]
    v1, demo, webrtc = PROFILES
    assert (v1.transport, v1.envelope, v1.catalog, v1.headerless_default) == (
        "ws.v1",
        "classic.v1",
        babelforce_v1.CATALOG,
        True,
    )
    assert (demo.transport, demo.catalog, demo.headerless_default) == (
        "ws.v1",
        demo_v1.CATALOG,
        False,
    )
    assert (webrtc.transport, webrtc.envelope, webrtc.catalog, webrtc.headerless_default) == (
        "webrtcws.v1",
        "classic.v1",
        babelforce_v1.CATALOG,
        False,
    )
    assert profile_for("rtvbp.demo.v1") is demo
    with pytest.raises(KeyError):
        profile_for("bearer.x")


def test_supported_list_sets_the_preference() -> None:
    offered = ["rtvbp.v1", "rtvbp.webrtc.v1"]
    assert negotiate(offered, ["rtvbp.webrtc.v1", "rtvbp.v1"]).token == "rtvbp.webrtc.v1"
    assert negotiate(offered, ["rtvbp.v1"]).token == "rtvbp.v1"
    with pytest.raises(NegotiationError) as raised:
        negotiate(["rtvbp.demo.v1"], ["rtvbp.v1"])
    assert raised.value.kind == "unsupported-profile"


def test_headerless_needs_the_default_profile_served() -> None:
    assert negotiate([], ["rtvbp.webrtc.v1", "rtvbp.v1"]) == Negotiated(None, PROFILES[0])
    with pytest.raises(NegotiationError) as raised:
        negotiate([], ["rtvbp.demo.v1"])
    assert raised.value.kind == "unsupported-profile"


@pytest.mark.parametrize("supported", [[], ["rtvbp.v2"], ["rtvbp.v1", "bearer.x"]])
def test_unregistered_supported_token_is_a_configuration_error(supported: list[str]) -> None:
    with pytest.raises(ValueError):
        negotiate(["rtvbp.v1"], supported)


def test_credential_tokens_are_never_selected() -> None:
    assert negotiate(["bearer.dG9rZW4", "rtvbp.v1"]).token == "rtvbp.v1"
    assert negotiate(["rtvbp.webrtc.v1", "bearer.abc-_"]).token == "rtvbp.webrtc.v1"
    with pytest.raises(NegotiationError) as raised:
        negotiate(["bearer.dG9rZW4"])
    assert raised.value.kind == "unsupported-profile"
    assert "dG9rZW4" not in str(raised.value)


@pytest.mark.parametrize(
    "offered",
    [
        pytest.param(["rtvbp.v1", ""], id="empty-after-valid"),
        pytest.param(["rtvbp v1"], id="inner-space"),
        pytest.param(["rtvbp.v1;q=1"], id="separator"),
        pytest.param(["rtvbp.v1\u00e9"], id="non-ascii"),
        pytest.param(["bearer.abc=", "rtvbp.v1"], id="padded-credential"),
    ],
)
def test_invalid_tokens_reject_the_offer(offered: list[str]) -> None:
    with pytest.raises(NegotiationError) as raised:
        negotiate(offered)
    assert raised.value.kind == "invalid-token"
    assert "abc=" not in str(raised.value)


def test_matching_is_exact() -> None:
    with pytest.raises(NegotiationError) as raised:
        negotiate(["RTVBP.V1"])
    assert raised.value.kind == "unsupported-profile"


@pytest.mark.parametrize(
    ("header", "tokens"),
    [
        (None, []),
        ("rtvbp.v1", ["rtvbp.v1"]),
        ("rtvbp.v1, bearer.abc", ["rtvbp.v1", "bearer.abc"]),
        (" rtvbp.webrtc.v1 ,\trtvbp.v1 ", ["rtvbp.webrtc.v1", "rtvbp.v1"]),
        ("", [""]),
        ("rtvbp.v1,", ["rtvbp.v1", ""]),
        ("a,,b", ["a", "", "b"]),
    ],
)
def test_parse_offer(header: str | None, tokens: list[str]) -> None:
    assert parse_offer(header) == tokens


def test_parsed_empty_element_is_rejected() -> None:
    with pytest.raises(NegotiationError) as raised:
        negotiate(parse_offer("rtvbp.v1, "))
    assert raised.value.kind == "invalid-token"


TOKENS = st.sampled_from(
    ["rtvbp.v1", "rtvbp.demo.v1", "rtvbp.webrtc.v1", "rtvbp.v9", "bearer.abc", "x"]
)


@given(st.lists(TOKENS, min_size=1, max_size=5))
def test_selection_is_the_first_served_profile_that_was_offered(offered: list[str]) -> None:
    served = [profile.token for profile in PROFILES if profile.token in offered]
    if served:
        negotiated = negotiate(offered)
        assert negotiated.token == served[0]
        assert negotiated.profile is profile_for(served[0])
    else:
        with pytest.raises(NegotiationError) as raised:
            negotiate(offered)
        assert raised.value.kind == "unsupported-profile"
    assert parse_offer(", ".join(offered)) == offered
