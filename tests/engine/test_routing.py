"""Routing table rules: pure, including a property test over random sets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from callbridge.engine.routing import RouteMode, RouteNode, build_routing


def rtp(endpoint_id: str, codec: str = "PCMU/8000", direction: str = "sendrecv") -> RouteNode:
    return RouteNode(
        endpoint_id, direction, "connected", is_rtp=True, wire_codec=codec, accepts_dtmf=True
    )


def test_two_rtp_same_codec_is_passthrough_both_ways() -> None:
    table = build_routing([rtp("a"), rtp("b")])
    assert table.modes == {"a": RouteMode.PASSTHROUGH, "b": RouteMode.PASSTHROUGH}
    assert table.passthrough == {"a": ("b",), "b": ("a",)}
    assert table.dtmf_destinations == {"a": ("b",), "b": ("a",)}


def test_different_codecs_transcode() -> None:
    table = build_routing([rtp("a"), rtp("b", "opus/48000")])
    assert table.modes == {"a": RouteMode.TRANSCODE, "b": RouteMode.TRANSCODE}
    assert table.passthrough == {}


def test_three_parties_mix_n_minus_one() -> None:
    table = build_routing([rtp("a"), rtp("b"), rtp("c")])
    assert all(mode is RouteMode.MIX for mode in table.modes.values())
    assert set(table.sources["a"]) == {"b", "c"}


def test_ineligible_states_are_left_out() -> None:
    connecting = RouteNode("c", "sendrecv", "connecting", is_rtp=True, wire_codec="PCMU/8000")
    paused = RouteNode("f", "sendonly", "paused")
    table = build_routing([rtp("a"), connecting, paused])
    assert table.destinations == {}


def test_file_to_rtp_is_transcode_and_never_a_destination() -> None:
    table = build_routing([RouteNode("f", "sendonly", "playing"), rtp("a")])
    assert table.destinations == {"f": ("a",)}
    assert table.modes == {"a": RouteMode.TRANSCODE}
    assert "f" not in table.dtmf_destinations


def test_bridges_never_route_to_each_other_and_get_no_dtmf() -> None:
    bridge_one = RouteNode("x", "sendrecv", "connected", is_bridge=True, wire_codec="L16/48000")
    bridge_two = RouteNode("y", "sendrecv", "connected", is_bridge=True, wire_codec="L16/48000")
    table = build_routing([bridge_one, bridge_two, rtp("a")])
    assert "y" not in table.destinations["x"]
    assert table.dtmf_destinations == {}


@st.composite
def node_sets(draw: st.DrawFn) -> list[RouteNode]:
    count = draw(st.integers(min_value=0, max_value=8))
    nodes = []
    for index in range(count):
        is_bridge = draw(st.booleans())
        nodes.append(
            RouteNode(
                f"e{index}",
                draw(st.sampled_from(["sendrecv", "sendonly", "recvonly"])),
                draw(st.sampled_from(["connected", "playing", "connecting", "paused", "finished"])),
                is_bridge=is_bridge,
                is_rtp=not is_bridge and draw(st.booleans()),
                wire_codec=draw(st.sampled_from([None, "PCMU/8000", "opus/48000"])),
                accepts_dtmf=draw(st.booleans()),
            )
        )
    return nodes


@given(node_sets())
def test_routing_invariants(nodes: list[RouteNode]) -> None:
    by_id = {node.endpoint_id: node for node in nodes}
    table = build_routing(nodes)
    pairs = {(s, d) for s, targets in table.destinations.items() for d in targets}
    assert pairs == {(s, d) for d, sources in table.sources.items() for s in sources}
    for source_id, destination_id in pairs:
        source, destination = by_id[source_id], by_id[destination_id]
        assert source_id != destination_id
        assert source.direction != "recvonly"
        assert destination.direction != "sendonly"
        assert not (source.is_bridge and destination.is_bridge)
        assert source.state in ("connected", "playing")
        assert destination.state in ("connected", "playing")
    # Every allowed pair is present (completeness).
    eligible = [node for node in nodes if node.state in ("connected", "playing")]
    for source in eligible:
        for destination in eligible:
            allowed = (
                source is not destination
                and source.direction != "recvonly"
                and destination.direction != "sendonly"
                and not (source.is_bridge and destination.is_bridge)
            )
            assert ((source.endpoint_id, destination.endpoint_id) in pairs) == allowed
    for destination_id, mode in table.modes.items():
        sources = table.sources[destination_id]
        if mode is RouteMode.MIX:
            assert len(sources) >= 2
        else:
            assert len(sources) == 1
        if mode is RouteMode.PASSTHROUGH:
            source = by_id[sources[0]]
            assert source.is_rtp and by_id[destination_id].is_rtp
            assert source.wire_codec == by_id[destination_id].wire_codec is not None
    for source_id, targets in table.dtmf_destinations.items():
        assert by_id[source_id].is_rtp
        for target in targets:
            assert (source_id, target) in pairs
            assert by_id[target].accepts_dtmf and not by_id[target].is_bridge
