"""The recording writer: one thread per process that owns every recording file's disk I/O.

The event loop never waits for the disk. Each media tick a recording hands the writer one batch
of items (pcap records, or one frame of every WAV channel) with `submit`, a single lock-free
queue put; the writer thread writes them and flushes every file that changed at most
`FLUSH_INTERVAL_S` apart (a WAV file's header sizes are rewritten at each flush), so a killed
process leaves every file readable up to its last flush. The per-recording bound
(`recording_channel_size`) is kept by the loop side from two counters that each have one
writer: `RecordingFile.queued` (loop thread) and `RecordingFile.written` (writer thread).

The thread is not a daemon: a normal interpreter exit waits until every closed file is
complete. It ends as soon as no file is open and nothing is queued (the next recording starts
a new one).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, Final

import numpy as np

from callbridge.media.errors import MediaError
from callbridge.media.flac import FlacWriter
from callbridge.media.pcap import GLOBAL_HEADER, pcap_record
from callbridge.media.pcm import SAMPLE_DTYPE, fit_frame
from callbridge.media.wav import WavWriter

__all__ = [
    "FLUSH_INTERVAL_S",
    "AudioFile",
    "FlacFile",
    "PcapFile",
    "PcapItem",
    "RecordingFile",
    "RecordingWriter",
    "WavFile",
    "WavItem",
    "writer",
]

FLUSH_INTERVAL_S: Final = 1.0
"""Longest time written audio stays in the writer's buffers (what a `kill -9` can lose)."""

PcapItem = tuple[float, bytes, bytes, bool, bool]
"""(unix time s, leg address, datagram, is RTCP, sent towards the leg)."""
WavItem = Sequence[bytes | None]
"""One 20 ms frame per channel (None: silence), or for a mixed file every leg's frame."""

WriteError = OSError | MediaError
"""What writing a recording can raise: the disk's errors, or the encoder's."""
ErrorCallback = Callable[[WriteError], None]

logger = logging.getLogger(__name__)


class RecordingFile:
    """One open recording file: what the writer thread does with its items."""

    def __init__(self, file: BinaryIO) -> None:
        self.file = file
        self.queued = 0
        """Items handed to the writer (loop thread only)."""
        self.written = 0
        """Items the writer is done with, written or not (writer thread only)."""
        self.error: WriteError | None = None
        self.on_error: ErrorCallback | None = None
        """Called in the writer thread with the first write error (then items are skipped)."""

    def write(self, items: Sequence[Any]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class PcapFile(RecordingFile):
    """A pcap recording; the file header is written at once."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        file.write(GLOBAL_HEADER)
        file.flush()

    def write(self, items: Sequence[PcapItem]) -> None:
        self.file.write(
            b"".join(
                pcap_record(datagram, unix_time, source, rtcp=rtcp, reverse=reverse)
                for unix_time, source, datagram, rtcp, reverse in items
            )
        )


class AudioFile(RecordingFile):
    """An audio recording of `channels` channels, or of one channel that mixes every leg."""

    def __init__(self, file: BinaryIO, channels: int, sample_rate: int, *, mix: bool) -> None:
        super().__init__(file)
        self.channels = channels
        self.mix = mix
        self.samples = sample_rate // 50

    def compose(self, items: Sequence[WavItem]) -> bytes:
        """Interleaved samples of the items' frames (mixed, or one channel each)."""
        samples = self.samples
        size = samples * 2
        channels = self.channels
        block = np.zeros((len(items), samples, channels), dtype=SAMPLE_DTYPE)
        for index, frames in enumerate(items):
            if self.mix:
                present = [frame for frame in frames if frame]
                if not present:
                    continue
                total = np.zeros(samples, dtype=np.int32)
                for pcm in present:
                    if len(pcm) != size:
                        pcm = fit_frame(pcm, samples)
                    total += np.frombuffer(pcm, dtype=SAMPLE_DTYPE)
                block[index, :, 0] = np.clip(total, -32768, 32767)
            else:
                for channel, frame in enumerate(frames):
                    if frame:
                        if len(frame) != size:
                            frame = fit_frame(frame, samples)
                        block[index, :, channel] = np.frombuffer(frame, dtype=SAMPLE_DTYPE)
        return block.tobytes()


class WavFile(AudioFile):
    """A WAV recording; the header is written at once and its sizes at every flush."""

    def __init__(self, file: BinaryIO, channels: int, sample_rate: int, *, mix: bool) -> None:
        super().__init__(file, channels, sample_rate, mix=mix)
        self.wav = WavWriter(file, channels, sample_rate)
        file.flush()

    def write(self, items: Sequence[WavItem]) -> None:
        self.wav.write(self.compose(items))

    def flush(self) -> None:
        self.wav.flush()


class FlacFile(AudioFile):
    """A FLAC recording (at most `MAX_CHANNELS` channels)."""

    def __init__(self, file: BinaryIO, channels: int, sample_rate: int, *, mix: bool) -> None:
        super().__init__(file, channels, sample_rate, mix=mix)
        self.flac = FlacWriter(file, channels, sample_rate)

    def write(self, items: Sequence[WavItem]) -> None:
        self.flac.write(self.compose(items))

    def close(self) -> None:
        try:
            self.flac.close()
        finally:
            self.file.close()


class RecordingWriter:
    """The writer thread and its queue (use the process-wide `writer()`)."""

    def __init__(self, flush_interval_s: float = FLUSH_INTERVAL_S) -> None:
        self.flush_interval_s = flush_interval_s
        self._queue: queue.SimpleQueue[
            tuple[RecordingFile, Sequence[Any] | None, Callable[[], None] | None]
        ] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._open = 0
        self._thread: threading.Thread | None = None

    def open(self, file: RecordingFile) -> None:
        """Count `file` as open (its header is already written) and make sure the thread runs."""
        with self._lock:
            self._open += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="callbridge-recording-writer"
                )
                self._thread.start()

    def submit(self, file: RecordingFile, items: Sequence[Any]) -> None:
        """Queue items for `file` (the caller counted them in `file.queued`)."""
        self._queue.put((file, items, None))

    def close(self, file: RecordingFile, done: Callable[[], None]) -> None:
        """Write what is queued, flush, close; then call `done` in the writer thread."""
        self._queue.put((file, None, done))

    def _run(self) -> None:
        dirty: set[RecordingFile] = set()
        next_flush = time.monotonic() + self.flush_interval_s
        while True:
            timeout = max(0.0, next_flush - time.monotonic()) if dirty else None
            try:
                file, items, done = self._queue.get(timeout=timeout)
            except queue.Empty:
                self._flush(dirty)
                next_flush = time.monotonic() + self.flush_interval_s
                continue
            if items is None:
                dirty.discard(file)
                self._finish(file)
                if done is not None:
                    done()
                with self._lock:
                    self._open -= 1
                    if self._open == 0 and self._queue.empty():
                        self._thread = None
                        return
            else:
                if file.error is None:
                    try:
                        file.write(items)
                    except (OSError, MediaError) as error:
                        self._failed(file, error)
                    else:
                        dirty.add(file)
                file.written += len(items)
            if dirty and time.monotonic() >= next_flush:
                self._flush(dirty)
                next_flush = time.monotonic() + self.flush_interval_s

    def _flush(self, dirty: set[RecordingFile]) -> None:
        for file in dirty:
            if file.error is None:
                try:
                    file.flush()
                except (OSError, MediaError) as error:
                    self._failed(file, error)
        dirty.clear()

    def _finish(self, file: RecordingFile) -> None:
        try:
            if file.error is None:
                file.flush()
        except (OSError, MediaError) as error:
            self._failed(file, error)
        try:
            file.close()
        except (OSError, MediaError):
            pass

    def _failed(self, file: RecordingFile, error: WriteError) -> None:
        file.error = error
        logger.warning("recording write failed: %s", error)
        callback = file.on_error
        if callback is not None:
            try:
                callback(error)
            except Exception:
                logger.exception("recording error callback failed")


_WRITER: RecordingWriter | None = None
_WRITER_LOCK: Final = threading.Lock()


def writer() -> RecordingWriter:
    """The process's recording writer."""
    global _WRITER
    with _WRITER_LOCK:
        if _WRITER is None:
            _WRITER = RecordingWriter()
        return _WRITER
