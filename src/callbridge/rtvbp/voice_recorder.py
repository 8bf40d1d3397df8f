"""The voice peer's default recorder: one stereo WAV file per recording an application asks for.

Left is what the caller says (`VoiceCall.send_audio`), right what the application says as it
is played (`read_frame` / `playout_frames`), both at the call's rate. Audio is placed on the
wall clock: a side's samples are written once they are `HOLD_S` old, and a side that gave
nothing by then is written as silence, so the two sides stay aligned through pauses. The
header sizes are rewritten about once a second (`WavWriter.flush`), so a killed process leaves a
readable file. Files are ``{call id}-recording-{n}.wav`` in `directory`.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np

from callbridge.media.resample import Resampler
from callbridge.media.wav import WavWriter

__all__ = ["DEFAULT_DIRECTORY", "HOLD_S", "WavCallRecorder"]

DEFAULT_DIRECTORY: Final = Path(tempfile.gettempdir()) / "callbridge-voice-recordings"
HOLD_S: Final = 0.2
"""How late a side's audio may arrive and still be written in its place."""
_FLUSH_S: Final = 1.0
_CALLER, _APPLICATION = 0, 1


class _Track:
    """One recording: two sides' pending samples and the file they are interleaved into."""

    def __init__(self, file: BinaryIO, sample_rate: int) -> None:
        self.file = file
        self.wav = WavWriter(file, 2, sample_rate)
        self.rate = sample_rate
        self.started = time.monotonic()
        self.written = 0
        """Samples per side already in the file."""
        self.pending = (bytearray(), bytearray())
        self.flushed_at = self.started

    def add(self, side: int, pcm: bytes, now: float) -> None:
        pending = self.pending[side]
        end = round((now - self.started) * self.rate)
        begin = end - len(pcm) // 2
        have = self.written + len(pending) // 2
        if have < begin - round(HOLD_S * self.rate):
            pending.extend(bytes(2 * (begin - have)))
        pending.extend(pcm)
        self.write(now)

    def write(self, now: float, *, final: bool = False) -> None:
        target = self._longest() if final else round((now - self.started - HOLD_S) * self.rate)
        for pending in self.pending:
            missing = target - self.written - len(pending) // 2
            if missing > 0:
                pending.extend(bytes(2 * missing))
        count = min(len(pending) for pending in self.pending) // 2
        if count:
            left, right = (
                np.frombuffer(bytes(pending[: 2 * count]), dtype="<i2") for pending in self.pending
            )
            self.wav.write(np.stack((left, right), axis=1).tobytes())
            for pending in self.pending:
                del pending[: 2 * count]
            self.written += count
        if final or now - self.flushed_at >= _FLUSH_S:
            self.wav.flush()
            self.flushed_at = now

    def _longest(self) -> int:
        return self.written + max(len(pending) for pending in self.pending) // 2

    def close(self) -> None:
        self.write(time.monotonic(), final=True)
        self.file.close()


class WavCallRecorder:
    """A `Recorder` that writes stereo WAV files (see the module docstring)."""

    def __init__(self, directory: Path = DEFAULT_DIRECTORY) -> None:
        self.directory = directory
        self.paths: dict[str, Path] = {}
        """The file of every recording started, by id."""
        self._name = "call"
        self._rate = 8000
        self._tracks: dict[str, _Track] = {}
        self._resamplers: dict[int, Resampler] = {}

    def open(self, name: str, sample_rate: int) -> None:
        """The call's audio is open: files are named after `name`, written at `sample_rate`."""
        self._name = name
        self._rate = sample_rate

    async def start(self, tags: Sequence[str] | None) -> str:
        """Open the next file (OSError when the directory cannot be written)."""
        recording_id = f"recording-{len(self.paths) + 1}"
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"{self._name}-{recording_id}.wav"
        self._tracks[recording_id] = _Track(path.open("xb"), self._rate)
        self.paths[recording_id] = path
        return recording_id

    async def stop(self, recording_id: str) -> None:
        self._tracks.pop(recording_id).close()

    def caller_audio(self, pcm: bytes, sample_rate: int | None = None) -> None:
        """What the caller sent (at `sample_rate`, default the call's)."""
        if not self._tracks:
            return
        if sample_rate is not None and sample_rate != self._rate:
            resampler = self._resamplers.get(sample_rate)
            if resampler is None:
                resampler = self._resamplers[sample_rate] = Resampler(sample_rate, self._rate)
            pcm = resampler.resample(pcm)
        self._add(_CALLER, pcm)

    def application_audio(self, frame: bytes) -> None:
        """A frame of the application's audio, as it is played."""
        if self._tracks:
            self._add(_APPLICATION, frame)

    def close(self) -> None:
        """The call ended: finish every file."""
        for recording_id in list(self._tracks):
            self._tracks.pop(recording_id).close()

    def _add(self, side: int, pcm: bytes) -> None:
        now = time.monotonic()
        for track in self._tracks.values():
            track.add(side, pcm, now)
