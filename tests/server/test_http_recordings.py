"""HTTP /recordings over a real server: list, download with Range, delete, confinement, limits
and the control-plane scopes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yarl

from tests.server.test_control_access import CONTROL_TOKEN, READ_TOKEN, bearer

if TYPE_CHECKING:
    from tests.server.conftest import ServerHandle, StartServer


@pytest.fixture
def recording_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "recordings"
    (directory / "day" / "hour").mkdir(parents=True)
    (directory / "a.pcap").write_bytes(b"0123456789")
    (directory / "b.wav").write_bytes(b"RIFF")
    (directory / "b.flac").write_bytes(b"fLaC")
    (directory / "notes.txt").write_bytes(b"text")
    (directory / "day" / "hour" / "c.pcap").write_bytes(b"c")
    deep = directory.joinpath(*[f"level{index}" for index in range(11)])
    deep.mkdir(parents=True)
    (deep / "too-deep.pcap").write_bytes(b"")
    (tmp_path / "secret.pcap").write_bytes(b"secret")
    (directory / "link.pcap").symlink_to(tmp_path / "secret.pcap")
    return directory


@pytest.fixture
async def server(start_server: StartServer, recording_dir: Path) -> ServerHandle:
    return await start_server(recording_dir=recording_dir, max_recording_download_bytes=10)


async def _get(server: ServerHandle, path: str, **headers: str) -> tuple[int, bytes, str]:
    url = yarl.URL(server.base_url + path, encoded=True)
    async with server.http.get(url, headers=headers) as response:
        return response.status, await response.read(), response.content_type


async def test_list_sorted_filtered_and_paged(server: ServerHandle) -> None:
    async with server.http.get(f"{server.base_url}/recordings") as response:
        assert response.status == 200
        listing = await response.json()
    assert listing == {
        "recordings": ["a.pcap", "b.flac", "b.wav", "day/hour/c.pcap", "link.pcap"],
        "total": 5,
        "skip": 0,
        "limit": 100,
    }
    query = "/recordings/?startsWith=day%2F&limit=5000"
    async with server.http.get(yarl.URL(server.base_url + query, encoded=True)) as response:
        assert await response.json() == {
            "recordings": ["day/hour/c.pcap"],
            "total": 1,
            "skip": 0,
            "limit": 1000,
        }
    async with server.http.get(f"{server.base_url}/recordings?skip=1&limit=x") as response:
        paged = await response.json()
    assert paged["recordings"][0] == "b.flac" and paged["limit"] == 100


async def test_download_with_range(server: ServerHandle) -> None:
    assert await _get(server, "/recordings/a.pcap") == (
        200,
        b"0123456789",
        "application/vnd.tcpdump.pcap",
    )
    status, body, _ = await _get(server, "/recordings/a.pcap", Range="bytes=2-5")
    assert (status, body) == (206, b"2345")
    assert (await _get(server, "/recordings/b.wav"))[2] == "audio/wav"
    assert (await _get(server, "/recordings/b.flac"))[2] == "audio/flac"
    assert (await _get(server, "/recordings/notes.txt"))[:2] == (200, b"text")


async def test_confinement_and_limits(
    server: ServerHandle, recording_dir: Path, tmp_path: Path
) -> None:
    assert (await _get(server, "/recordings/link.pcap"))[0] == 403
    assert (await _get(server, "/recordings/..%2Fsecret.pcap"))[0] in (403, 404)
    assert (await _get(server, "/recordings/..%2F..%2Fmissing"))[0] == 404
    assert (await _get(server, "/recordings/nothing.pcap"))[0] == 404
    assert (await _get(server, "/recordings/day"))[0] == 404
    (recording_dir / "big.pcap").write_bytes(bytes(11))
    assert (await _get(server, "/recordings/big.pcap"))[0] == 413
    async with server.http.delete(f"{server.base_url}/recordings/link.pcap") as response:
        assert response.status == 403
    assert (tmp_path / "secret.pcap").exists()


async def test_delete(server: ServerHandle, recording_dir: Path) -> None:
    async with server.http.delete(f"{server.base_url}/recordings/day/hour/c.pcap") as response:
        assert (response.status, await response.json()) == (200, {"deleted": True})
    assert not (recording_dir / "day" / "hour" / "c.pcap").exists()
    async with server.http.delete(f"{server.base_url}/recordings/day/hour/c.pcap") as response:
        assert response.status == 404
    async with server.http.post(f"{server.base_url}/recordings/a.pcap") as response:
        assert response.status == 405


async def test_missing_directory_lists_nothing(start_server: StartServer, tmp_path: Path) -> None:
    server = await start_server(recording_dir=tmp_path / "never-created")
    async with server.http.get(f"{server.base_url}/recordings") as response:
        assert (await response.json())["recordings"] == []


@pytest.mark.parametrize(
    ("method", "token", "status"),
    [
        ("GET", None, 401),
        ("GET", READ_TOKEN, 200),
        ("GET", CONTROL_TOKEN, 200),
        ("DELETE", None, 401),
        ("DELETE", READ_TOKEN, 403),
        ("DELETE", CONTROL_TOKEN, 200),
    ],
)
async def test_scopes(
    start_server: StartServer, recording_dir: Path, method: str, token: str | None, status: int
) -> None:
    server = await start_server(
        recording_dir=recording_dir,
        control={"tokens": [CONTROL_TOKEN], "read_tokens": [READ_TOKEN]},
    )
    headers = bearer(token) if token else {}
    url = f"{server.base_url}/recordings/a.pcap"
    async with server.http.request(method, url, headers=headers) as response:
        assert response.status == status
