"""The load generator of the media benchmarks (benchmarks/rtp_load.py): its burst method run by
the native generator (rtp_blast.c) against the Python one, through a tiny relay on loopback."""

from __future__ import annotations

import multiprocessing
import selectors
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from callbridge.media.g711 import alaw_decode, alaw_to_ulaw, ulaw_decode, ulaw_to_alaw

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import rtp_load  # noqa: E402  (benchmarks/ is not a package)

DURATION_S = 1.0
DECODE = {"pcmu": ulaw_decode, "pcma": alaw_decode}
TRANSCODE = {("pcmu", "pcma"): ulaw_to_alaw, ("pcma", "pcmu"): alaw_to_ulaw}
PAYLOAD_TYPE = {"pcmu": 0, "pcma": 8}


class Relay:
    """One socket per party; a packet from a party goes to the other party of its session (two
    parties) or back to it (one party), G.711 law converted when the two differ. With
    `drop_every` n, every n-th packet that carries a burst is dropped instead."""

    def __init__(self, ports: list[int], codecs: tuple[str, ...], drop_every: int = 0) -> None:
        assert len(codecs) in (1, 2)
        self.codecs = codecs
        self.parties = [("127.0.0.1", port) for port in ports]
        self.sockets = []
        for _ in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            self.sockets.append(sock)
        self.drop_every = drop_every
        self.bursts = 0
        self.dropped = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def ports(self) -> list[int]:
        return [int(sock.getsockname()[1]) for sock in self.sockets]

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()

    def _run(self) -> None:
        width = len(self.codecs)
        with selectors.DefaultSelector() as selector:
            for index, sock in enumerate(self.sockets):
                selector.register(sock, selectors.EVENT_READ, index)
            while not self.stopping.is_set():
                for key, _ in selector.select(0.05):
                    index: int = key.data
                    try:
                        packet = self.sockets[index].recv(2048)
                    except OSError:
                        continue
                    peer = index if width == 1 else index ^ 1
                    self._forward(packet, self.codecs[index % width], peer)

    def _forward(self, packet: bytes, codec: str, peer: int) -> None:
        payload = packet[12:]
        level = int(np.abs(np.frombuffer(DECODE[codec](payload), dtype="<i2")).max())
        if level >= rtp_load.BURST_THRESHOLD:
            self.bursts += 1
            if self.drop_every and self.bursts % self.drop_every == 0:
                self.dropped += 1
                return
        peer_codec = self.codecs[peer % len(self.codecs)]
        if peer_codec != codec:
            payload = TRANSCODE[(codec, peer_codec)](payload)
        header = packet[:1] + bytes([PAYLOAD_TYPE[peer_codec]]) + packet[2:12]
        self.sockets[peer].sendto(header + payload, self.parties[peer])


def run_generator(
    monkeypatch: pytest.MonkeyPatch,
    generator: str,
    codecs: tuple[str, ...],
    sessions: int,
    drop_every: int = 0,
    method: str = "burst",
) -> dict[str, Any]:
    """One window of `method` (the burst method unless told) through a `Relay`, by the
    `generator` ("python" or "native"); its figures."""
    monkeypatch.setenv(rtp_load.GENERATOR_SWITCH, generator)
    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    process = context.Process(
        target=rtp_load.generator_entry,
        args=(child_conn, codecs, sessions, method, DURATION_S, 1),
        daemon=True,
    )
    process.start()
    relay: Relay | None = None

    def receive() -> Any:
        assert conn.poll(30), "the load generator stopped answering"
        return conn.recv()

    try:
        relay = Relay(receive(), codecs, drop_every)
        conn.send(relay.ports())
        assert receive() == "start"
        assert receive() == "stop"
        figures: dict[str, Any] = receive()
        process.join(10)
        assert process.exitcode == 0
        return figures
    finally:
        if process.is_alive():
            process.kill()
        if relay is not None:
            relay.close()
        conn.close()


@pytest.fixture(scope="module", autouse=True)
def native_generator() -> None:
    """The native generator compiles (else the "native" runs would be Python ones)."""
    assert rtp_load._native_generator() is not None


def expected_bursts(codecs: tuple[str, ...], sessions: int) -> int:
    """Bursts heard in one window: every party bursts every 5 frames (at most two parties)."""
    per_party = round(DURATION_S / rtp_load.FRAME_S) // (rtp_load.BURST_EVERY // 2)
    return per_party * sessions * len(codecs) * max(len(codecs) - 1, 1)


@pytest.mark.parametrize(
    ("codecs", "sessions"),
    [(("pcmu",), 30), (("pcmu", "pcma"), 20)],
    ids=["echo-pcmu", "pcmu-pcma"],
)
def test_native_burst_figures_agree_with_python(
    monkeypatch: pytest.MonkeyPatch, codecs: tuple[str, ...], sessions: int
) -> None:
    assert rtp_load._runs_natively(codecs, "burst")
    figures = {
        generator: run_generator(monkeypatch, generator, codecs, sessions)
        for generator in ("python", "native")
    }
    expected = expected_bursts(codecs, sessions)
    for generator, window in figures.items():
        assert abs(window["expected"] - expected) <= expected * 0.05, (generator, window)
        assert window["matched"] == window["expected"], (generator, window)  # no loss
        assert window["unmatched"] == 0 and window["corrupt"] == 0, (generator, window)
        assert window["send_errors"] == 0, (generator, window)
        assert window["p99"] < 20.0, (generator, window)
        assert 0.0 < window["generator_cpu"] < 1.0, (generator, window)
        assert set(window["by_receiver"]) == set(codecs), (generator, window)
        assert len(window["samples_ms"]) == window["matched"], (generator, window)
    python, native = figures["python"], figures["native"]
    assert abs(native["matched"] - python["matched"]) <= expected * 0.05
    assert abs(native["sent"] - python["sent"]) <= python["sent"] * 0.05


def test_native_burst_counts_a_dropped_burst_as_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    codecs = ("pcmu", "pcmu")
    window = run_generator(monkeypatch, "native", codecs, 20, drop_every=3)
    expected = expected_bursts(codecs, 20)
    assert abs(window["expected"] - expected) <= expected * 0.05, window
    lost = window["expected"] - window["matched"]
    assert window["expected"] / 3 - 10 <= lost <= window["expected"] / 3 + 10, window
    assert window["unmatched"] == 0, window


def test_native_payload_method_still_matches_every_packet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    window = run_generator(monkeypatch, "native", ("pcmu", "pcmu"), 20, method="payload")
    assert window["sent"] >= 1900, window
    assert window["matched"] == window["expected"] == window["sent"], window
    assert window["corrupt"] == 0 and window["unmatched"] == 0, window
