"""Conformance scenarios: every case, once per role, over a memory pair.

The implementation under test is a `RtvbpSession` on one end; the test plays the peer on the
other end with the envelope codec directly, binding `$ids` and comparing payloads as parsed JSON
(absent is not null).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from callbridge.rtvbp import babelforce_v1, demo_v1
from callbridge.rtvbp.catalog import Catalog, Role, decode_payload, encode_payload
from callbridge.rtvbp.envelope import (
    ABSENT,
    ErrorBody,
    Event,
    Frame,
    Payload,
    Request,
    Response,
    decode_frame,
    encode_frame,
)
from callbridge.rtvbp.errors import RemoteError
from callbridge.rtvbp.memory import MemoryTransport
from callbridge.rtvbp.session import IncomingRequest, RtvbpSession
from callbridge.rtvbp.transport_base import MessageKind
from tests.rtvbp.vectors import CATALOG_NAMES, VECTORS_DIR

CATALOGS: dict[str, Catalog] = {"babelforce.v1": babelforce_v1.CATALOG, "demo.v1": demo_v1.CATALOG}
GUARD_S = 2.0
"""Hang guard for awaiting the other side; never a pass/fail timing."""


def scenario_cases() -> list[Any]:
    cases = []
    for catalog_name in CATALOG_NAMES:
        for path in sorted((VECTORS_DIR / catalog_name / "scenarios").glob("*.json")):
            scenario = json.loads(path.read_bytes())
            for case in scenario["cases"]:
                for role in (Role.APPLICATION, Role.VOICE):
                    cases.append(
                        pytest.param(
                            catalog_name,
                            case,
                            role,
                            id=f"{catalog_name}/{path.stem}/{case['name']}/{role.value}",
                        )
                    )
    return cases


def wire_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def step_payload(step: dict[str, Any], key: str) -> Payload:
    return wire_json(step[key]) if key in step else ABSENT


def assert_same_payload(actual: Payload, step: dict[str, Any], key: str) -> None:
    """Semantic equality of a raw payload with a step's value; absent only matches absent."""
    if key not in step:
        assert actual is ABSENT, f"{key} should be absent, got {actual!r}"
        return
    assert isinstance(actual, bytes), f"{key} is absent, expected {step[key]!r}"
    assert json.loads(actual) == step[key]


def typed_as_json(value: Any) -> Any:
    return json.loads(encode_payload(value))


@dataclass
class Script:
    """What the local session needs before the steps run: scripted results and event sinks."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, asyncio.Queue[Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, case: dict[str, Any], local: Role) -> Script:
        script = cls()
        methods = {
            step["id"]: step["method"] for step in case["steps"] if step["kind"] == "request"
        }
        for step in case["steps"]:
            if step["kind"] == "response" and step["from"] == local.value and "result" in step:
                script.results[methods[step["response"]]] = step["result"]
            elif step["kind"] == "event" and step["from"] == local.peer.value:
                script.events[step["event"]] = asyncio.Queue()
        return script

    def install(self, session: RtvbpSession) -> None:
        for method, value in self.results.items():
            result_type = session.catalog.operations[method].result_type
            canned = decode_payload(result_type, wire_json(value))

            async def answer(request: IncomingRequest, canned: Any = canned) -> Any:
                return canned

            session.handle(method, answer)
        for name, queue in self.events.items():
            session.on_event(name, queue.put)


class ScenarioRun:
    """Executes the steps of one case with the local session on one end of a memory pair."""

    def __init__(self, session: RtvbpSession, peer: MemoryTransport, script: Script) -> None:
        self.session = session
        self.peer = peer
        self.script = script
        self.local = session.role
        self.ids: dict[str, str] = {}
        self.pending: dict[str, asyncio.Task[Any]] = {}
        self.methods: dict[str, str] = {}
        self.expect_close = False

    async def peer_frame(self) -> Frame:
        message = await asyncio.wait_for(self.peer.receive(), GUARD_S)
        assert message.kind is MessageKind.TEXT, message
        return decode_frame(message.data)

    async def run(self, steps: list[dict[str, Any]]) -> None:
        for step in steps:
            local_step = step["from"] == self.local.value
            kind = step["kind"]
            if kind == "request":
                await (self.local_request(step) if local_step else self.peer_request(step))
            elif kind == "response":
                await (self.local_response(step) if local_step else self.peer_response(step))
            else:
                assert kind == "event", step
                await (self.local_event(step) if local_step else self.peer_event(step))

    async def local_request(self, step: dict[str, Any]) -> None:
        method = step["method"]
        spec = self.session.catalog.operations[method]
        params = decode_payload(spec.params_type, step_payload(step, "params"))
        self.pending[step["id"]] = asyncio.create_task(self.session.request(method, params))
        frame = await self.peer_frame()
        assert isinstance(frame, Request), frame
        assert frame.method == method
        assert_same_payload(frame.params, step, "params")
        self.bind(step["id"], frame.id)
        self.methods[step["id"]] = method

    async def peer_request(self, step: dict[str, Any]) -> None:
        binding = step["id"]
        self.bind(binding, f"peer-{binding.lstrip('$')}")
        self.methods[binding] = step["method"]
        request = Request(self.ids[binding], step["method"], step_payload(step, "params"))
        await self.peer.send_text(encode_frame(request))

    async def local_response(self, step: dict[str, Any]) -> None:
        frame = await self.peer_frame()
        assert isinstance(frame, Response), frame
        assert frame.response == self.ids[step["response"]]
        if "error" in step:
            assert frame.error is not None, frame
            expected = step["error"]
            assert (frame.error.code, frame.error.message) == (
                expected["code"],
                expected["message"],
            )
            assert_same_payload(frame.error.data, expected, "data")
            return
        assert frame.error is None, frame
        assert_same_payload(frame.result, step, "result")
        if self.is_terminal(step):
            close = await asyncio.wait_for(self.peer.receive(), GUARD_S)
            assert (close.kind, close.close_code) == (MessageKind.CLOSE, 1000)
            info = await self.session.wait_closed()
            assert (info.code, info.by_peer) == (1000, False)

    async def peer_response(self, step: dict[str, Any]) -> None:
        binding = step["response"]
        if "error" in step:
            expected = step["error"]
            body = ErrorBody(expected["code"], expected["message"], step_payload(expected, "data"))
            await self.peer.send_text(encode_frame(Response(self.ids[binding], error=body)))
            with pytest.raises(RemoteError) as caught:
                await asyncio.wait_for(self.pending.pop(binding), GUARD_S)
            assert (caught.value.code, caught.value.message) == (
                expected["code"],
                expected["message"],
            )
            return
        response = Response(self.ids[binding], result=step_payload(step, "result"))
        await self.peer.send_text(encode_frame(response))
        result = await asyncio.wait_for(self.pending.pop(binding), GUARD_S)
        assert typed_as_json(result) == step.get("result", {})
        if self.is_terminal(step):
            await self.peer.close()
            info = await self.session.wait_closed()
            assert (info.code, info.by_peer) == (1000, True)

    async def local_event(self, step: dict[str, Any]) -> None:
        spec = self.session.catalog.events[step["event"]]
        await self.session.notify(
            step["event"], decode_payload(spec.data_type, step_payload(step, "data"))
        )
        frame = await self.peer_frame()
        assert isinstance(frame, Event), frame
        assert frame.event == step["event"]
        assert_same_payload(frame.data, step, "data")
        self.bind(step["id"], frame.id)

    async def peer_event(self, step: dict[str, Any]) -> None:
        binding = step["id"]
        self.bind(binding, f"peer-{binding.lstrip('$')}")
        event = Event(self.ids[binding], step["event"], step_payload(step, "data"))
        await self.peer.send_text(encode_frame(event))
        delivered = await asyncio.wait_for(self.script.events[step["event"]].get(), GUARD_S)
        assert typed_as_json(delivered) == step.get("data", {})

    def bind(self, binding: str, actual: str) -> None:
        assert binding.startswith("$"), binding
        assert binding not in self.ids, f"{binding} bound twice"
        assert actual
        self.ids[binding] = actual

    def is_terminal(self, step: dict[str, Any]) -> bool:
        return self.session.catalog.operations[self.methods[step["response"]]].terminal


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    leaked = asyncio.all_tasks() - before - {asyncio.current_task()}
    assert not leaked, f"tasks left running: {leaked}"


@pytest.mark.parametrize(("catalog_name", "case", "role"), scenario_cases())
async def test_scenario(catalog_name: str, case: dict[str, Any], role: Role) -> None:
    local_end, peer_end = MemoryTransport.pair()
    session = RtvbpSession(role, CATALOGS[catalog_name], local_end, request_timeout_s=GUARD_S)
    script = Script.of(case, role)
    script.install(session)
    run = ScenarioRun(session, peer_end, script)
    async with session:
        await run.run(case["steps"])
        assert not run.pending, "a local request was never answered by the script"
    await peer_end.close()


def test_every_scenario_case_is_collected() -> None:
    """6 babelforce.v1 cases and 1 demo.v1 case, each run once per role."""
    assert len(scenario_cases()) == 2 * (6 + 1)
