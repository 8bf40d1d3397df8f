"""recording.start / recording.stop over the control protocol, and a recording that survives
`kill -9` of a real `callbridge serve`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from tests.engine.engine_peers import RtpPeer
from tests.engine.recording_support import TSHARK, read_flac, read_pcap, read_wav, tshark_rtp
from tests.server.test_cli import CALLBRIDGE, REPO, free_port

if TYPE_CHECKING:
    from tests.server.conftest import ControlClient, ServerHandle, StartServer


@pytest.fixture
def recording_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "recordings"
    directory.mkdir()
    return directory


@pytest.fixture
async def recording_server(start_server: StartServer, recording_dir: Path) -> ServerHandle:
    return await start_server(recording_dir=recording_dir, max_recordings_per_session=3)


async def _rtp_leg(client: ControlClient) -> tuple[str, RtpPeer]:
    peer = await RtpPeer.open()
    result = await client.result(
        "endpoint.create_from_offer", {"sdp": peer.offer("pcmu"), "direction": "sendrecv"}
    )
    peer.use(result["sdp_answer"])
    return result["endpoint_id"], peer


async def test_start_stop_and_session_info(
    recording_server: ServerHandle, recording_dir: Path
) -> None:
    client = await recording_server.connect()
    await client.result("session.create")
    endpoint_id, peer = await _rtp_leg(client)
    path = str(recording_dir / "call.pcap")
    started = await client.result("recording.start", {"endpoint_id": None, "file_path": path})
    assert set(started) == {"recording_id"}
    assert "call.pcap" in os.listdir(recording_dir)
    wav = await client.result(
        "recording.start",
        {"endpoint_id": endpoint_id, "file_path": str(recording_dir / "leg.wav"), "format": "wav"},
    )
    info = await client.result("session.info")
    assert {entry["recording_id"]: entry["endpoint_id"] for entry in info["recordings"]} == {
        started["recording_id"]: None,
        wav["recording_id"]: endpoint_id,
    }
    assert all(entry["state"] == "active" for entry in info["recordings"])
    for _ in range(10):
        peer.send(bytes(160))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    stopped = await client.result("recording.stop", {"recording_id": started["recording_id"]})
    assert stopped["file_path"] == path and stopped["packets"] == 10
    assert set(stopped) == {"file_path", "duration_ms", "packets", "dropped_packets"}
    again = await client.error("recording.stop", {"recording_id": started["recording_id"]})
    assert again == {"code": "RECORDING_ERROR", "message": "Recording not found"}
    await client.result("endpoint.remove", {"endpoint_id": endpoint_id})
    event = await client.next_event("recording.stopped")
    assert event["recording_id"] == wav["recording_id"] and event["reason"] == "endpoint_removed"
    assert (await client.result("session.info"))["recordings"] == []
    async with recording_server.http.get(f"{recording_server.base_url}/metrics") as response:
        metrics = await response.text()
    assert "callbridge_packets_recorded_total 10.0" in metrics
    assert "callbridge_recordings_active 0.0" in metrics


async def test_destroy_reports_session_destroyed(
    recording_server: ServerHandle, recording_dir: Path
) -> None:
    client = await recording_server.connect()
    await client.result("session.create")
    started = await client.result("recording.start", {"file_path": str(recording_dir / "x.pcap")})
    await client.result("session.destroy")
    event = await client.next_event("recording.stopped")
    assert event["recording_id"] == started["recording_id"]
    assert event["reason"] == "session_destroyed"


@pytest.mark.parametrize(
    ("params", "code", "text"),
    [
        ({"file_path": "relative.pcap"}, "INVALID_PARAMS", "absolute"),
        ({"file_path": "{dir}/../x.pcap"}, "INVALID_PARAMS", ".."),
        ({"file_path": "{dir}/missing/x.pcap"}, "INVALID_PARAMS", "does not exist"),
        ({"file_path": "{dir}-evil/x.pcap"}, "INVALID_PARAMS", "inside"),
        ({"file_path": "{dir}/taken.pcap"}, "RECORDING_ERROR", "Cannot create recording file"),
        ({}, "INVALID_PARAMS", "file_path"),
        (None, "INVALID_PARAMS", ""),
        ({"file_path": "{dir}/x.pcap", "endpoint_id": "nope"}, "INVALID_PARAMS", "endpoint_id"),
        ({"file_path": "{dir}/x.pcap", "format": "mp3"}, "INVALID_PARAMS", "format"),
        ({"file_path": "{dir}/x.wav", "format": "wav", "mode": "5.1"}, "INVALID_PARAMS", "mode"),
        ({"file_path": "{dir}/x.wav", "sample_rate": 44100}, "INVALID_PARAMS", "sample_rate"),
        (
            {"file_path": "{dir}/x.pcap", "endpoint_id": str(uuid.UUID(int=7))},
            "RECORDING_ERROR",
            "Endpoint not found",
        ),
    ],
)
async def test_refusals(
    recording_server: ServerHandle,
    recording_dir: Path,
    params: dict[str, Any] | None,
    code: str,
    text: str,
) -> None:
    (recording_dir / "taken.pcap").write_bytes(b"")
    (recording_dir.parent / "recordings-evil").mkdir()
    client = await recording_server.connect()
    assert (await client.error("recording.start", {"file_path": "/x"}))["code"] == "NO_SESSION"
    await client.result("session.create")
    if params is not None and "file_path" in params:
        params = {**params, "file_path": params["file_path"].replace("{dir}", str(recording_dir))}
    error = await client.error("recording.start", params)
    assert error["code"] == code and text in error["message"], error
    assert sorted(os.listdir(recording_dir)) == ["taken.pcap"]


async def test_limit_and_unknown_ids(recording_server: ServerHandle, recording_dir: Path) -> None:
    client = await recording_server.connect()
    await client.result("session.create")
    for index in range(3):
        await client.result("recording.start", {"file_path": f"{recording_dir}/{index}.pcap"})
    error = await client.error("recording.start", {"file_path": f"{recording_dir}/3.pcap"})
    assert error == {
        "code": "RECORDING_ERROR",
        "message": "Maximum concurrent recordings (3) reached",
    }
    assert (await client.error("recording.stop", {"recording_id": "x"}))["code"] == (
        "INVALID_PARAMS"
    )
    unknown = await client.error("recording.stop", {"recording_id": str(uuid.UUID(int=1))})
    assert unknown == {"code": "RECORDING_ERROR", "message": "Recording not found"}


async def _control(port: int) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    http = aiohttp.ClientSession()
    return http, await http.ws_connect(f"http://127.0.0.1:{port}/")


async def _call(websocket: aiohttp.ClientWebSocketResponse, method: str, params: Any) -> Any:
    request_id = uuid.uuid4().hex
    await websocket.send_json({"id": request_id, "method": method, "params": params})
    while True:
        message = await websocket.receive_json(timeout=10)
        if message.get("id") == request_id:
            assert "result" in message, message
            return message["result"]


async def _serve_and_record(tmp_path: Path, recording_dir: Path, ending: signal.Signals) -> None:
    """A real `callbridge serve` recording one RTP leg to pcap and WAV for 2.5 s, then `ending`."""
    port = free_port()
    config = tmp_path / "callbridge.toml"
    config.write_text(
        f'recording_dir = "{recording_dir}"\nrtp_port_range = [43000, 43099]\n'
        f'cache_dir = "{tmp_path / "cache"}"\nshutdown_max_wait_secs = 1\n'
    )
    server = await asyncio.create_subprocess_exec(
        *CALLBRIDGE,
        "serve",
        "--config",
        str(config),
        "--listen",
        f"127.0.0.1:{port}",
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    http = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                http, websocket = await _control(port)
                break
            except aiohttp.ClientError:
                if time.monotonic() > deadline or server.returncode is not None:
                    raise
                await asyncio.sleep(0.1)
        await _call(websocket, "session.create", {})
        peer = await RtpPeer.open()
        answer = await _call(
            websocket,
            "endpoint.create_from_offer",
            {"sdp": peer.offer("pcmu"), "direction": "sendrecv"},
        )
        peer.use(answer["sdp_answer"])
        await _call(websocket, "recording.start", {"file_path": f"{recording_dir}/call.pcap"})
        await _call(
            websocket,
            "recording.start",
            {"file_path": f"{recording_dir}/call.wav", "format": "wav", "sample_rate": 8000},
        )
        await _call(
            websocket,
            "recording.start",
            {"file_path": f"{recording_dir}/call.flac", "format": "flac", "sample_rate": 8000},
        )
        for _ in range(125):  # 2.5 s: at least two flushes
            peer.send(bytes([0xFF]) * 160)
            await asyncio.sleep(0.02)
        server.send_signal(ending)
        async with asyncio.timeout(20):
            await server.wait()
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
        if http is not None:
            await http.close()


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize("ending", [signal.SIGKILL, signal.SIGTERM])
async def test_a_killed_or_drained_server_leaves_readable_files(
    tmp_path: Path, recording_dir: Path, ending: signal.Signals
) -> None:
    await _serve_and_record(tmp_path, recording_dir, ending)
    rate, samples = read_wav(recording_dir / "call.wav")
    assert rate == 8000 and len(samples) >= 8000  # at least a second survived
    flac_rate, flac_samples = read_flac(recording_dir / "call.flac")
    assert flac_rate == 8000 and len(flac_samples) >= 8000
    packets = tshark_rtp(recording_dir / "call.pcap")
    assert len(packets) >= 50
    assert len(read_pcap(recording_dir / "call.pcap")) == len(packets)
    if ending is signal.SIGTERM:  # drained: everything is in, the header covers all of it
        assert len(packets) == 125
        data = (recording_dir / "call.wav").read_bytes()
        assert int.from_bytes(data[40:44], "little") == len(data) - 44
        assert len(samples) >= 2 * 8000
