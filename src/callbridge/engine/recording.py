"""Recordings of a media session: pcap of what enters it, WAV or FLAC of what its legs say.

A recording covers one endpoint (`endpoint_id`) or the whole session (every endpoint, also those
that join later; a `split` audio recording has one channel per endpoint present at its start).

* **pcap** (the default, rtpbridge's format): every packet that enters the session from a
  covered leg, decrypted RTP (DTMF included) and RTCP of RTP legs as they arrived, and the
  frames of the other legs (file, tone, bridge, RTVBP) as PCMU RTP packets (PT 0, 160 samples
  each, one SSRC per leg), stamped with the wall clock at arrival. What the session sends
  (transcoded and mixed audio) is not recorded. Leg `i` of the session (in the order the legs
  are first recorded; a departed leg's number is reused) is written as `10.{i//254+1}.0.{i%254+1}`.
* **wav** / **flac**: 16-bit PCM at `sample_rate`, written on the media clock: every 20 ms tick
  each leg gives one frame (or silence when it had none), so the legs stay aligned however long
  the call; `mix` sums the legs into one channel, `split` gives each its own channel.

Every exit path stops a recording and finishes its file: `recording.stop`, the removal or
transfer of its endpoint, and the end of the session (destroy, orphan and idle/empty timeouts,
shutdown); the stops not asked for are reported as `recording.stopped`. Disk I/O is the
writer thread's (`recording_writer`); media never waits for it, and items beyond the
recording's bound (`recording_channel_size`) are dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any, Final

from callbridge.engine.endpoint import Endpoint
from callbridge.engine.errors import INVALID_PARAMS, EngineError
from callbridge.engine.recording_playout import LegPlayout
from callbridge.engine.recording_writer import (
    FlacFile,
    PcapFile,
    PcapItem,
    RecordingFile,
    WavFile,
    writer,
)
from callbridge.engine.rtp_endpoint import RtpEndpoint
from callbridge.engine.session import MediaSession
from callbridge.media.errors import MediaError
from callbridge.media.flac import MAX_CHANNELS as FLAC_MAX_CHANNELS
from callbridge.media.g711 import ulaw_encode
from callbridge.media.pcap import leg_address
from callbridge.media.rtp import RTP_FIXED_HEADER, RtpPacket

__all__ = [
    "FORMATS",
    "MODES",
    "RECORDING_ERROR",
    "SAMPLE_RATES",
    "SessionRecordings",
    "resolve_recording_path",
]

RECORDING_ERROR: Final = "RECORDING_ERROR"
FORMATS: Final = ("pcap", "wav", "flac")
MODES: Final = ("mix", "split")
SAMPLE_RATES: Final = (8000, 16000, 24000, 48000)
_PCMU_RATE: Final = 8000
_PCMU_FRAME: Final = 160

logger = logging.getLogger(__name__)


def recording_error(message: str) -> EngineError:
    return EngineError(RECORDING_ERROR, message)


def resolve_recording_path(recording_dir: Path, file_path: str) -> Path:
    """The canonical path of a new recording; INVALID_PARAMS unless `file_path` is absolute,
    has no `..`, its parent directory exists, and it lies inside `recording_dir` (which is
    created if missing)."""
    if not os.path.isabs(file_path):
        raise EngineError(INVALID_PARAMS, f"file_path must be an absolute path: {file_path!r}")
    path = Path(file_path)
    if ".." in path.parts:
        raise EngineError(INVALID_PARAMS, "file_path must not contain '..'")
    try:
        recording_dir.mkdir(mode=0o700, exist_ok=True)
        root = recording_dir.resolve(strict=True)
        parent = path.parent.resolve(strict=True)
    except (OSError, RuntimeError):
        raise EngineError(
            INVALID_PARAMS, f"parent directory of {file_path!r} does not exist"
        ) from None
    if not parent.is_dir():
        raise EngineError(INVALID_PARAMS, f"parent of {file_path!r} is not a directory")
    resolved = parent / path.name
    if not resolved.is_relative_to(root) or resolved == root:
        raise EngineError(INVALID_PARAMS, "file_path must be inside the recording directory")
    return resolved


class _Recording:
    __slots__ = (
        "batch",
        "channel_size",
        "channels",
        "dropped",
        "endpoint_id",
        "file",
        "file_path",
        "format",
        "id",
        "mode",
        "packets",
        "sample_rate",
        "started",
    )

    def __init__(
        self,
        endpoint_id: str | None,
        file_path: str,
        recording_format: str,
        mode: str,
        sample_rate: int,
        file: RecordingFile,
        channel_size: int,
        channels: tuple[str, ...],
    ) -> None:
        self.id = str(uuid.uuid4())
        self.endpoint_id = endpoint_id
        self.file_path = file_path
        self.format = recording_format
        self.mode = mode
        self.sample_rate = sample_rate
        self.file = file
        self.channel_size = channel_size
        self.channels = channels
        """WAV split: the endpoint of each channel, fixed at the start."""
        self.started = time.monotonic()
        self.batch: list[Any] = []
        self.packets = 0
        self.dropped = 0

    def add(self, item: Any) -> None:
        """Queue one item, or count it dropped when the writer is `channel_size` behind."""
        if self.packets - self.file.written >= self.channel_size:
            self.dropped += 1
            return
        self.batch.append(item)
        self.packets += 1

    def covers(self, endpoint_id: str) -> bool:
        if self.endpoint_id is not None:
            return endpoint_id == self.endpoint_id
        if self.format != "pcap" and self.mode == "split":
            return endpoint_id in self.channels
        return True

    def info(self) -> dict[str, Any]:
        return {
            "recording_id": self.id,
            "endpoint_id": self.endpoint_id,
            "file_path": self.file_path,
            "state": "active",
            "format": self.format,
        }

    def result(self) -> dict[str, Any]:
        return {
            "file_path": self.file_path,
            "duration_ms": int((time.monotonic() - self.started) * 1000),
            "packets": self.packets,
            "dropped_packets": self.dropped,
        }


class _Leg:
    """One endpoint captured by pcap recordings: its synthetic address and packet taps."""

    __slots__ = ("address", "endpoint", "metrics", "offset", "recordings", "rtp_header")

    def __init__(self, endpoint: Endpoint, address: bytes, offset: float) -> None:
        self.endpoint = endpoint
        self.address = address
        self.metrics = endpoint.host.metrics
        self.offset = offset
        """Unix time minus monotonic time."""
        self.recordings: tuple[_Recording, ...] = ()
        self.rtp_header = [secrets.randbits(16), secrets.randbits(32), secrets.randbits(32)]
        """Sequence, timestamp and SSRC of the PCMU packets made from this leg's frames."""

    def on_packet(self, packet: RtpPacket, arrival: float) -> None:
        """Hot path while recorded: one inbound RTP packet of an RTP leg."""
        datagram = packet.payload.obj
        if not isinstance(datagram, bytes):
            datagram = bytes(datagram)
        self.metrics.packets_recorded_total += 1
        item: PcapItem = (arrival + self.offset, self.address, datagram, False, False)
        for recording in self.recordings:
            recording.add(item)

    def on_rtcp(self, datagram: bytes, arrival: float) -> None:
        item: PcapItem = (arrival + self.offset, self.address, datagram, True, False)
        for recording in self.recordings:
            recording.add(item)

    def on_frame(self, pcm: bytes, now: float) -> None:
        """A frame of a leg without packets (8 kHz), recorded as one PCMU packet."""
        header = self.rtp_header
        sequence, timestamp, ssrc = header
        header[0] = (sequence + 1) & 0xFFFF
        header[1] = (timestamp + _PCMU_FRAME) & 0xFFFFFFFF
        datagram = RTP_FIXED_HEADER.pack(0x80, 0, sequence, timestamp, ssrc) + ulaw_encode(pcm)
        self.metrics.packets_recorded_total += 1
        item: PcapItem = (now + self.offset, self.address, datagram, False, False)
        for recording in self.recordings:
            recording.add(item)


class SessionRecordings:
    """Every recording of one session; it observes the session while one is active."""

    def __init__(self, session: MediaSession) -> None:
        self.session = session
        self.recordings: dict[str, _Recording] = {}
        self._writer = writer()
        self._loop = asyncio.get_running_loop()
        self._offset = time.time() - time.monotonic()
        self._addresses: dict[str, int] = {}
        self._legs: dict[str, _Leg] = {}
        self._taps: dict[tuple[str, int], LegPlayout] = {}
        self._known: frozenset[str] = frozenset()
        self._tick = 0
        self._attached = False

    @classmethod
    def of(cls, session: MediaSession) -> SessionRecordings:
        """The session's recordings (created on first use)."""
        for observer in session.observers:
            if isinstance(observer, cls):
                return observer
        return cls(session)

    # -- control ---------------------------------------------------------------------------

    def start(
        self,
        endpoint_id: str | None,
        file_path: str,
        recording_format: str = "pcap",
        mode: str = "mix",
        sample_rate: int = 16000,
    ) -> str:
        """Start a recording; returns its id. The file exists when this returns.

        INVALID_PARAMS for a path outside the rules (see `resolve_recording_path`) or an unknown
        format, mode or rate; RECORDING_ERROR for an unknown endpoint, the per-session limit, a
        split recording of a session without endpoints, or a file that cannot be created (one
        that exists is never overwritten).
        """
        session = self.session
        session.check_alive()
        config = session.context.config
        if recording_format not in FORMATS or mode not in MODES or sample_rate not in SAMPLE_RATES:
            raise EngineError(INVALID_PARAMS, "unknown recording format, mode or sample rate")
        path = resolve_recording_path(config.recording_dir, file_path)
        if endpoint_id is not None and endpoint_id not in session.endpoints:
            raise recording_error("Endpoint not found")
        limit = config.max_recordings_per_session
        if len(self.recordings) >= limit:
            raise recording_error(f"Maximum concurrent recordings ({limit}) reached")
        channels: tuple[str, ...] = ()
        if recording_format != "pcap" and mode == "split" and endpoint_id is None:
            channels = tuple(session.endpoints)
            if not channels:
                raise recording_error("A split recording needs at least one endpoint")
            if recording_format == "flac" and len(channels) > FLAC_MAX_CHANNELS:
                raise recording_error(f"A FLAC file holds at most {FLAC_MAX_CHANNELS} channels")
        file = None
        try:
            file = open(path, "xb")  # the writer thread closes it
            recording_file: RecordingFile
            if recording_format == "pcap":
                recording_file = PcapFile(file)
            else:
                audio = WavFile if recording_format == "wav" else FlacFile
                recording_file = audio(file, max(1, len(channels)), sample_rate, mix=not channels)
        except (OSError, MediaError) as error:
            if file is not None:
                file.close()
            reason = getattr(error, "strerror", None) or error
            raise recording_error(f"Cannot create recording file '{file_path}': {reason}") from None
        recording = _Recording(
            endpoint_id,
            file_path,
            recording_format,
            mode,
            sample_rate,
            recording_file,
            config.recording_channel_size,
            channels,
        )
        recording_file.on_error = lambda error: self._report_failure(recording)
        self._writer.open(recording_file)
        self.recordings[recording.id] = recording
        session.recordings.append(recording.info())
        session.metrics.recordings_active += 1
        self._attach()
        self._retap()
        return recording.id

    def stop(self, recording_id: str) -> dict[str, Any]:
        """Stop a recording (the file is finished in the background); its figures."""
        self.session.check_alive()
        recording = self.recordings.get(recording_id)
        if recording is None:
            raise recording_error("Recording not found")
        return self._stop(recording, None)

    # -- observer --------------------------------------------------------------------------

    def endpoint_leaving(self, endpoint: Endpoint, reason: str) -> None:
        for recording in list(self.recordings.values()):
            if recording.endpoint_id == endpoint.id:
                self._stop(recording, reason)
        leg = self._legs.pop(endpoint.id, None)
        if leg is not None:
            self._untap_packets(leg)
        for key in [key for key in self._taps if key[0] == endpoint.id]:
            self.session.remove_audio_tap(endpoint.id, self._taps.pop(key))
        self._addresses.pop(endpoint.id, None)
        self._known = self._known - {endpoint.id}

    def session_ending(self, reason: str) -> None:
        for recording in list(self.recordings.values()):
            self._stop(recording, "session_destroyed", retap=False)

    # -- media clock -----------------------------------------------------------------------

    def _on_tick(self, now: float) -> None:
        session = self.session
        if not session.alive or not self.recordings:
            return
        self._tick += 1
        if session.endpoints.keys() != self._known:
            self._retap()
        tick = self._tick
        taps = self._taps
        for recording in self.recordings.values():
            if recording.format != "pcap":
                rate = recording.sample_rate
                if recording.channels:
                    names: Any = recording.channels
                elif recording.endpoint_id is not None:
                    names = (recording.endpoint_id,)
                else:
                    names = session.endpoints
                frames = []
                for endpoint_id in names:
                    tap = taps.get((endpoint_id, rate))
                    frames.append(None if tap is None else tap.take(tick))
                recording.add(frames)
            if recording.batch:
                self._writer.submit(recording.file, recording.batch)
                recording.batch = []

    # -- internals -------------------------------------------------------------------------

    def _attach(self) -> None:
        if not self._attached:
            self._attached = True
            self.session.observers.append(self)
            self.session.context.clock.add(self._on_tick)

    def _detach(self) -> None:
        if self._attached:
            self._attached = False
            if self in self.session.observers:
                self.session.observers.remove(self)
            self.session.context.clock.discard(self._on_tick)

    def _retap(self) -> None:
        """Install exactly the taps the active recordings need."""
        session = self.session
        endpoints = session.endpoints
        self._known = frozenset(endpoints)
        pcaps = [rec for rec in self.recordings.values() if rec.format == "pcap"]
        for endpoint_id, endpoint in endpoints.items():
            covering = tuple(rec for rec in pcaps if rec.covers(endpoint_id))
            leg = self._legs.get(endpoint_id)
            if covering and leg is None:
                leg = self._legs[endpoint_id] = _Leg(
                    endpoint, leg_address(self._address_of(endpoint_id)), self._offset
                )
                self._tap_packets(leg)
            elif not covering and leg is not None:
                self._untap_packets(self._legs.pop(endpoint_id))
            if leg is not None:
                leg.recordings = covering
        wanted = {
            (endpoint_id, rec.sample_rate)
            for rec in self.recordings.values()
            if rec.format != "pcap"
            for endpoint_id in endpoints
            if rec.covers(endpoint_id)
        }
        for key in [key for key in self._taps if key not in wanted]:
            session.remove_audio_tap(key[0], self._taps.pop(key))
        for key in wanted - self._taps.keys():
            tap = self._taps[key] = LegPlayout()
            session.add_audio_tap(key[0], key[1], tap)

    def _address_of(self, endpoint_id: str) -> int:
        index = self._addresses.get(endpoint_id)
        if index is None:
            taken = set(self._addresses.values())
            index = next(number for number in range(len(taken) + 1) if number not in taken)
            self._addresses[endpoint_id] = index
        return index

    def _tap_packets(self, leg: _Leg) -> None:
        endpoint = leg.endpoint
        if isinstance(endpoint, RtpEndpoint):
            endpoint.packet_tap = leg.on_packet
            if endpoint.transport is not None:
                endpoint.transport.rtcp_tap = leg.on_rtcp
        else:
            self.session.add_audio_tap(endpoint.id, _PCMU_RATE, leg)

    def _untap_packets(self, leg: _Leg) -> None:
        endpoint = leg.endpoint
        if isinstance(endpoint, RtpEndpoint):
            endpoint.packet_tap = None
            if endpoint.transport is not None:
                endpoint.transport.rtcp_tap = None
        else:
            self.session.remove_audio_tap(endpoint.id, leg)

    def _stop(
        self, recording: _Recording, reason: str | None, *, retap: bool = True
    ) -> dict[str, Any]:
        session = self.session
        del self.recordings[recording.id]
        session.recordings[:] = [
            info for info in session.recordings if info["recording_id"] != recording.id
        ]
        session.metrics.recordings_active -= 1
        if recording.batch:
            self._writer.submit(recording.file, recording.batch)
            recording.batch = []
        finished: asyncio.Future[None] = self._loop.create_future()
        self._writer.close(recording.file, lambda: self._call_soon(finished))
        session.context.spawn(
            self._wait_finished(finished, recording.file_path),
            name=f"recording-flush-{recording.id}",
        )
        result = recording.result()
        if reason is not None:
            session.emit(
                "recording.stopped", {"recording_id": recording.id, **result, "reason": reason}
            )
        if retap and session.alive:
            self._retap()
        if not self.recordings:
            self._detach()
        return result

    def _call_soon(self, finished: asyncio.Future[None]) -> None:
        """In the writer thread: the file is complete."""
        try:
            self._loop.call_soon_threadsafe(_resolve, finished)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    async def _wait_finished(self, finished: asyncio.Future[None], file_path: str) -> None:
        timeout = self.session.context.config.recording_flush_timeout_s
        try:
            await asyncio.wait_for(finished, timeout)
        except TimeoutError:
            logger.warning("recording %s not flushed within %s s", file_path, timeout)

    def _report_failure(self, recording: _Recording) -> None:
        """In the writer thread: the recording's file cannot be written."""
        try:
            self._loop.call_soon_threadsafe(self._write_failed, recording)
        except RuntimeError:
            pass

    def _write_failed(self, recording: _Recording) -> None:
        if self.recordings.get(recording.id) is recording:
            self._stop(recording, "write_error")


def _resolve(finished: asyncio.Future[None]) -> None:
    if not finished.done():
        finished.set_result(None)
