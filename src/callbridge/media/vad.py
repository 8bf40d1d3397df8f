"""Voice activity detection: two kept detectors and the speech/silence state machine over them.

Detectors score fixed windows of 16 kHz mono int16 audio with a speech probability 0..1:

- `WebRtcDetector` (libfvad's GMM through `webrtcvad-wheels`): 20 ms windows, a yes/no answer
  (1.0 or 0.0); `speech_threshold` picks its aggressiveness (0..0.25 -> 0, ... 0.75..1 -> 3).
- `SileroDetector` (the Silero VAD network on onnxruntime): 32 ms windows, a real probability.
  The model file is the one an installed package ships (`silero-vad` does, and some voice-agent
  frameworks do) or is named by path; nothing is ever downloaded.

`VoiceActivity` turns the scores into events: `SpeechStarted` once per utterance, then, after
`HANGOVER_MS` of non-speech, `Silence` every `silence_interval_ms` of silence. Silence is only
reported after speech; silence from the start produces nothing. Durations count audio samples.
"""

from __future__ import annotations

import importlib.metadata
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
import webrtcvad

from callbridge.media.errors import MediaError

__all__ = [
    "DETECTORS",
    "HANGOVER_MS",
    "VAD_RATE",
    "Silence",
    "SileroDetector",
    "SpeechDetector",
    "SpeechStarted",
    "VadError",
    "VadEvent",
    "VoiceActivity",
    "WebRtcDetector",
    "create_detector",
    "find_silero_model",
]

VAD_RATE: Final = 16000
"""Sample rate every detector works at, Hz."""
HANGOVER_MS: Final = 320
"""Non-speech needed after speech before silence is declared (a pause inside a sentence is
shorter), ms."""
DETECTORS: Final = ("webrtc", "silero")

_SILERO_FILE: Final = "silero_vad.onnx"
_SILERO_WINDOW: Final = 512
_SILERO_CONTEXT: Final = 64
"""The network reads each window with the previous window's last 64 samples in front."""
_SILERO_STATE_SHAPE: Final = (2, 1, 128)


class VadError(MediaError):
    """A detector could not be created or failed on audio."""


class SpeechDetector(Protocol):
    """Scores consecutive windows of one audio stream (stateful: one detector per stream)."""

    @property
    def window_samples(self) -> int:
        """Samples at `VAD_RATE` per scored window."""
        ...

    def probability(self, window: npt.NDArray[np.int16]) -> float:
        """Speech probability 0..1 of the next `window_samples` samples."""
        ...


_WEBRTC_WARMUP_WINDOWS: Final = 5
"""The WebRTC detector calls the first ~80 ms of any stream speech while it learns the noise
floor (measured on white noise); its first 100 ms of answers are discarded."""


class WebRtcDetector:
    """The WebRTC GMM detector on 20 ms windows; the answer is 1.0 (speech) or 0.0."""

    window_samples: Final = VAD_RATE // 50

    def __init__(self, speech_threshold: float) -> None:
        self.aggressiveness = min(3, int(speech_threshold * 4))
        self._vad = webrtcvad.Vad(self.aggressiveness)
        self._warming = _WEBRTC_WARMUP_WINDOWS

    def probability(self, window: npt.NDArray[np.int16]) -> float:
        speech = self._vad.is_speech(window.tobytes(), VAD_RATE)
        if self._warming:
            self._warming -= 1
            return 0.0
        return 1.0 if speech else 0.0


@cache
def find_silero_model() -> Path | None:
    """The Silero model file that an installed distribution ships, if any (`silero-vad`'s
    first; else the first other one whose files list it). Looked up once per process."""
    try:
        first = [importlib.metadata.distribution("silero-vad")]
    except importlib.metadata.PackageNotFoundError:
        first = []
    for distribution in [*first, *importlib.metadata.distributions()]:
        for file in distribution.files or ():
            if file.name == _SILERO_FILE:
                path = Path(str(file.locate()))
                if path.is_file():
                    return path
    return None


@cache
def _silero_session(model: Path) -> Any:
    """One onnxruntime session per model file, shared by every stream (state is per stream)."""
    try:
        import onnxruntime
    except ImportError as error:
        raise VadError(f"silero VAD needs onnxruntime: {error}") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:
        raise VadError(f"cannot load the silero model {model}: {error}") from None


class SileroDetector:
    """The Silero network on 32 ms windows, with its recurrent state carried between windows."""

    window_samples: Final = _SILERO_WINDOW

    def __init__(self, model: Path | None = None) -> None:
        path = model or find_silero_model()
        if path is None:
            raise VadError(
                f"silero VAD model not found: no installed package ships {_SILERO_FILE}; "
                "set its path"
            )
        if not path.is_file():
            raise VadError(f"silero VAD model {path} does not exist")
        self._session = _silero_session(path)
        self._state = np.zeros(_SILERO_STATE_SHAPE, dtype=np.float32)
        self._input = np.zeros((1, _SILERO_CONTEXT + _SILERO_WINDOW), dtype=np.float32)
        self._rate = np.array(VAD_RATE, dtype=np.int64)

    def probability(self, window: npt.NDArray[np.int16]) -> float:
        buffer = self._input
        buffer[0, :_SILERO_CONTEXT] = buffer[0, -_SILERO_CONTEXT:]
        buffer[0, _SILERO_CONTEXT:] = window * (1.0 / 32768.0)
        try:
            output, self._state = self._session.run(
                None, {"input": buffer, "state": self._state, "sr": self._rate}
            )
        except Exception as error:
            raise VadError(f"silero VAD failed: {error}") from None
        return float(output[0, 0])


def create_detector(
    name: str, speech_threshold: float, silero_model: Path | None = None
) -> SpeechDetector:
    """A new detector for one stream; VadError if it cannot be made here."""
    if name == "webrtc":
        return WebRtcDetector(speech_threshold)
    if name == "silero":
        return SileroDetector(silero_model)
    raise VadError(f"unknown VAD detector {name!r} (known: {', '.join(DETECTORS)})")


@dataclass(frozen=True)
class SpeechStarted:
    """Silence (or the start) turned into speech."""


@dataclass(frozen=True)
class Silence:
    """Silence after speech goes on; `duration_ms` is all of it so far (0 when forced because
    audio stopped arriving in the middle of speech)."""

    duration_ms: int


VadEvent = SpeechStarted | Silence


class VoiceActivity:
    """Speech/silence transitions of one stream of 16 kHz int16 audio, fed in any frame size."""

    def __init__(
        self, detector: SpeechDetector, speech_threshold: float, silence_interval_ms: int
    ) -> None:
        if not 0.0 <= speech_threshold <= 1.0 or math.isnan(speech_threshold):
            raise ValueError("speech_threshold must be within 0..1")
        if silence_interval_ms <= 0:
            raise ValueError("silence_interval_ms must be positive")
        self.detector = detector
        self.speech_threshold = speech_threshold
        self._window = detector.window_samples
        self._pending = np.zeros(0, dtype=np.int16)
        self._interval = silence_interval_ms * VAD_RATE // 1000
        self._hangover = HANGOVER_MS * VAD_RATE // 1000
        self.speaking = False
        self.in_silence = False
        self._quiet = 0
        """Non-speech samples since the last speech window."""
        self._next_report = 0
        """Value of `_quiet` at which the next `Silence` is due."""

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """Score the complete windows now available; VadError if the detector fails."""
        samples = np.frombuffer(pcm, dtype=np.int16)
        if self._pending.size:
            samples = np.concatenate((self._pending, samples))
        window = self._window
        usable = samples.size - samples.size % window
        self._pending = samples[usable:].copy()
        events: list[VadEvent] = []
        for start in range(0, usable, window):
            speech = self.detector.probability(samples[start : start + window])
            self._advance(speech >= self.speech_threshold, window, events)
        return events

    def missing(self, duration_ms: int) -> list[VadEvent]:
        """Audio stopped arriving for `duration_ms` (at least the hangover): speech is forced
        to silence (reported with duration 0); silence goes on counting."""
        events: list[VadEvent] = []
        if self.speaking:
            self.speaking = False
            self.in_silence = True
            self._quiet = 0
            self._next_report = self._interval
            events.append(Silence(0))
        elif self.in_silence:
            self._count_silence(duration_ms * VAD_RATE // 1000, events)
        return events

    def _advance(self, speech: bool, samples: int, events: list[VadEvent]) -> None:
        if speech:
            self._quiet = 0
            if not self.speaking:
                self.speaking = True
                self.in_silence = False
                events.append(SpeechStarted())
            return
        if self.speaking:
            self._quiet += samples
            if self._quiet >= self._hangover:
                self.speaking = False
                self.in_silence = True
                self._next_report = self._interval
                self._count_silence(0, events)
        elif self.in_silence:
            self._count_silence(samples, events)

    def _count_silence(self, samples: int, events: list[VadEvent]) -> None:
        self._quiet += samples
        if self._quiet >= self._next_report:
            events.append(Silence(self._quiet * 1000 // VAD_RATE))
            self._next_report = (self._quiet // self._interval + 1) * self._interval
