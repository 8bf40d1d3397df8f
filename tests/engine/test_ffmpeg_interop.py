"""ffmpeg as the real peer on both sides of a session: a sender and a receive-only receiver.

One ffmpeg plays a 440 Hz tone into endpoint A in real time (`-re`, so its own uneven pacing:
bursts of packets 20 and 30 ms apart), in its own packet size (about 23 ms of G.711) or in
forced 10, 30 and 60 ms packets (Opus: 10, 20, 40, 60 ms frames). Another ffmpeg receives
endpoint B from an SDP file and writes a WAV file; it never sends RTP, so it hears anything
only because callbridge sends to the SDP's address at once. B asks for its own packet duration
(`a=ptime`). Every codec pair, both ways and each codec to itself, at two packet durations;
the WAV must hold the tone at its pitch (within 1 %), without gap or repeat, and last as long
as it was sent. All cases run at once (a few seconds).

ffmpeg is a required test dependency (`make test` installs Debian's package).
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from callbridge.engine import pipeline
from callbridge.engine.manager import SessionManager
from callbridge.engine.offers import create_from_offer
from callbridge.media.sdp import parse_sdp
from tests.conftest import free_port_range, output_settled
from tests.engine.engine_peers import EventLog
from tests.engine.tone_checks import CODECS, analyse, offer, roomy_manager

__all__ = ["roomy_manager"]

FREQUENCY = 440.0
TONE_S = 1.0
ENCODERS = {"pcmu": "pcm_mulaw", "pcma": "pcm_alaw", "g722": "g722", "opus": "libopus"}
SENT_MS = (None, 10, 30, 60)
"""Packet durations the sender is made to use; None is ffmpeg's own (about 23 ms for G.711)."""
OPUS_SENT_MS = {None: 20, 10: 10, 30: 40, 60: 60}
"""Opus frames instead: ffmpeg's libopus default is 20 ms, and there is no 30 ms frame."""
ASKED_MS = (None, 30, 60, 10)
"""The receiver's a=ptime."""
AT_ONCE = 8
"""Cases run at the same time: more would starve ffmpeg's own pacing on a small machine (a
sender stalled for over 150 ms is, rightly, a new talkspurt: timestamps jump)."""


def ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    assert path is not None, "ffmpeg is a test dependency: `make test` installs it"
    return path


async def bound(port: int) -> None:
    """Wait until ffmpeg has bound `port`: from then on the kernel queues what arrives."""
    async with asyncio.timeout(10):
        while True:
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return
            finally:
                probe.close()
            await asyncio.sleep(0.02)


@dataclass
class Case:
    source: str
    sent_ms: int | None
    destination: str
    ptime_ms: int | None

    def __str__(self) -> str:
        sent = "ffmpeg's" if self.sent_ms is None else f"{self.sent_ms} ms"
        return f"{self.source} ({sent} packets) -> {self.destination} (ptime {self.ptime_ms})"

    def sender_options(self) -> list[str]:
        rate = CODECS[self.source][2]
        if self.source == "opus":
            return ["-ar", str(rate), "-frame_duration", str(OPUS_SENT_MS[self.sent_ms])]
        if self.sent_ms is None:
            return ["-ar", str(rate)]
        samples = rate * self.sent_ms // 1000
        return ["-af", f"aresample={rate},asetnsamples=n={samples}", "-ar", str(rate)]


def cases() -> list[Case]:
    pairs = list(itertools.product(CODECS, CODECS))
    return [
        Case(source, SENT_MS[index % 4], destination, ASKED_MS[(index + index // 4) % 4])
        for index, (source, destination) in enumerate(pairs * 2)
    ]


async def run_case(manager: SessionManager, case: Case, ports: tuple[int, int], work: Path) -> None:
    sender_port, receiver_port = ports
    session = manager.create_session(EventLog())
    _, answer = await create_from_offer(session, offer(sender_port, case.source), "sendrecv")
    destination_offer = offer(receiver_port, case.destination, case.ptime_ms)
    await create_from_offer(session, destination_offer, "sendrecv")
    remote = parse_sdp(answer).remote_address
    assert remote is not None
    (work / "receiver.sdp").write_text(destination_offer)
    output = work / "received.raw"
    rate = CODECS[case.destination][2]
    receiver = await asyncio.create_subprocess_exec(
        ffmpeg(),
        *("-nostdin", "-loglevel", "error", "-protocol_whitelist", "file,udp,rtp"),
        *("-i", str(work / "receiver.sdp"), "-ac", "1", "-ar", str(rate)),
        *("-f", "s16le", "-flush_packets", "1", "-y", str(output)),
    )
    sender = None
    try:
        await bound(receiver_port)
        sender = await asyncio.create_subprocess_exec(
            ffmpeg(),
            *("-nostdin", "-loglevel", "error", "-re", "-f", "lavfi"),
            *("-i", f"sine=frequency={FREQUENCY:g}:duration={TONE_S}", "-ac", "1"),
            *case.sender_options(),
            *("-acodec", ENCODERS[case.source], "-payload_type", str(CODECS[case.source][0])),
            *("-f", "rtp", f"rtp://{remote[0]}:{remote[1]}?localrtpport={sender_port}"),
            stdout=asyncio.subprocess.DEVNULL,
        )
        assert await asyncio.wait_for(sender.wait(), TONE_S + 10) == 0, str(case)
        await output_settled(output)  # the last packets are written
    finally:
        for process in (sender, receiver):
            if process is not None and process.returncode is None:
                process.kill()
                await process.wait()
        await session.destroy()
    report = analyse(np.frombuffer(output.read_bytes(), "<i2"), rate)
    report.assert_clean(FREQUENCY, str(case))
    # the tone's last part that does not fill a whole packet of the receiver's ptime stays
    # behind until more audio comes (up to 40 ms of a 60 ms packet)
    assert abs(report.duration_s - TONE_S) < 0.07, (str(case), report)


async def test_ffmpeg_to_ffmpeg_through_callbridge_every_codec_pair(
    roomy_manager: SessionManager, tmp_path: Path
) -> None:
    all_cases = cases()
    start, _ = free_port_range(2 * len(all_cases))
    slots = asyncio.Semaphore(AT_ONCE)

    async def run(index: int, case: Case) -> None:
        work = tmp_path / f"case{index}"
        work.mkdir()
        async with slots:
            await run_case(roomy_manager, case, (start + 4 * index, start + 4 * index + 2), work)

    results = await asyncio.gather(
        *(run(index, case) for index, case in enumerate(all_cases)), return_exceptions=True
    )
    failures = [result for result in results if isinstance(result, BaseException)]
    assert not failures, "\n".join(map(repr, failures))
    native = roomy_manager.metrics.packets_forwarded_native_total
    if roomy_manager.config.native_forwarding:  # the same-codec pairs are passthrough
        assert native > 0
    else:
        assert native == 0


async def test_phone_and_opus_peer_code_at_8000_hz_without_resampling(
    roomy_manager: SessionManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PCMU <-> Opus with ffmpeg's libopus on the Opus side, both ways: libopus codes at the
    phone's 8000 Hz, so no resampler is ever built, and the tone arrives clean."""

    def no_resampler(source: int, target: int) -> None:
        raise AssertionError(f"resampler {source} -> {target} Hz built")

    monkeypatch.setattr(pipeline, "Resampler", no_resampler)
    start, _ = free_port_range(4)
    for index, case in enumerate([Case("pcmu", None, "opus", 20), Case("opus", 60, "pcmu", 20)]):
        work = tmp_path / f"case{index}"
        work.mkdir()
        await run_case(roomy_manager, case, (start + 4 * index, start + 4 * index + 2), work)
