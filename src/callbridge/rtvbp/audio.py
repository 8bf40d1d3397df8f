"""Audio plumbing shared by both SDK roles: outbound chunking/pacing and inbound frame queues.

Outbound: audio of any length (and, optionally, any sample rate) becomes exact 20 ms frames; with
``realtime=True`` frames leave at the pace they play, a little ahead, so that a barge-in can stop
what has not left yet. Inbound: the session's reader hands frames to a bounded queue that the user
consumes as an async iterator; a consumer that falls behind loses the oldest frames, counted.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

from callbridge.media.pcm import FrameChunker
from callbridge.media.resample import Resampler
from callbridge.rtvbp.session import RtvbpSession

FRAME_SECONDS = 0.020
REALTIME_LEAD_SECONDS = 0.060
"""How far ahead of real time paced audio may run, to ride out scheduling jitter."""


def l16_frame_bytes(sample_rate: int, channels: int = 1) -> int:
    """Bytes of one 20 ms L16 frame: rate/50 samples x 2 bytes x channels (8 kHz mono: 320)."""
    if sample_rate <= 0 or sample_rate % 50:
        raise ValueError(f"sample rate {sample_rate} Hz does not divide into 20 ms frames")
    if channels <= 0:
        raise ValueError(f"channels must be positive, got {channels}")
    return sample_rate // 50 * 2 * channels


class OutboundAudio:
    """Turns PCM of any length into exact frames on `session`, optionally paced at real time."""

    def __init__(self, session: RtvbpSession, sample_rate: int, frame_bytes: int) -> None:
        self._session = session
        self.sample_rate = sample_rate
        self._frame_bytes = frame_bytes
        self._chunker = FrameChunker(frame_bytes)
        self._resamplers: dict[int, Resampler] = {}
        self._generation = 0
        self._next_send_at = 0.0

    async def send(
        self, pcm: bytes, *, sample_rate: int | None = None, realtime: bool = False
    ) -> int:
        """Queue `pcm` (L16 little-endian mono); returns the number of whole frames sent.

        A trailing partial frame waits for more audio or for `flush()`. With `realtime`, each
        frame is sent no earlier than it would play (up to 60 ms ahead); `clear()` stops such a
        send early.
        """
        if (
            len(pcm) == self._frame_bytes
            and not realtime
            and (sample_rate is None or sample_rate == self.sample_rate)
        ):
            await self.send_frame(pcm)
            return 1
        if sample_rate is not None and sample_rate != self.sample_rate:
            pcm = self._resampler(sample_rate).resample(pcm)
        frames = self._chunker.push(pcm)
        return await self._send_frames(frames, realtime)

    async def send_frame(self, frame: bytes) -> None:
        """One exact frame with nothing pending goes straight out (the echo/relay hot path)."""
        if self._chunker.pending_bytes:
            await self._send_frames(self._chunker.push(frame), realtime=False)
        else:
            await self._session.send_audio(frame)

    def send_frame_nowait(self, frame: bytes) -> bool:
        """One exact frame now, behind a pending partial frame if any; False when a frame was
        dropped (the peer reads too slowly)."""
        chunker = self._chunker
        if not chunker.pending_bytes:
            return self._session.send_audio_nowait(frame)
        if len(frame) != self._frame_bytes:
            raise ValueError(f"audio frame is {len(frame)} bytes, expected {self._frame_bytes}")
        sent = [self._session.send_audio_nowait(piece) for piece in chunker.push(frame)]
        return all(sent)

    async def flush(self, *, realtime: bool = False) -> int:
        """Send the trailing partial frame, padded with silence; returns frames sent (0 or 1)."""
        frame = self._chunker.flush(pad=True)
        return await self._send_frames([frame] if frame else [], realtime)

    def clear(self) -> int:
        """Drop audio not sent yet (the partial frame; stops paced sends); returns bytes dropped."""
        self._generation += 1
        self._next_send_at = 0.0
        return self._chunker.clear()

    async def _send_frames(self, frames: list[bytes], realtime: bool) -> int:
        generation = self._generation
        sent = 0
        for frame in frames:
            if realtime:
                await self._wait_for_slot()
                if generation != self._generation:
                    break
            await self._session.send_audio(frame)
            sent += 1
        return sent

    async def _wait_for_slot(self) -> None:
        now = time.monotonic()
        if self._next_send_at < now:
            self._next_send_at = now
        delay = self._next_send_at - REALTIME_LEAD_SECONDS - now
        self._next_send_at += FRAME_SECONDS
        if delay > 0:
            await asyncio.sleep(delay)

    def _resampler(self, source_rate: int) -> Resampler:
        resampler = self._resamplers.get(source_rate)
        if resampler is None:
            resampler = self._resamplers[source_rate] = Resampler(source_rate, self.sample_rate)
        return resampler


class InboundFrames:
    """Bounded queue of inbound frames, fed synchronously by the session reader (hot path)."""

    __slots__ = ("_closed", "_frames", "_waiter", "capacity", "dropped")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.dropped = 0
        """Frames discarded because nobody consumed them in time (oldest first)."""
        self._frames: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    def put(self, frame: bytes) -> None:
        if self._closed:
            return
        if len(self._frames) >= self.capacity:
            self._frames.popleft()
            self.dropped += 1
        self._frames.append(frame)
        self._wake()

    def close(self) -> None:
        """End iteration once the queued frames are consumed."""
        self._closed = True
        self._wake()

    async def get(self) -> bytes | None:
        """The next frame, or None once closed and drained."""
        while not self._frames:
            if self._closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._frames.popleft()

    def iterate(self, resampler: Resampler | None = None) -> AsyncIterator[bytes]:
        return _FrameIterator(self, resampler)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _FrameIterator:
    """`async for` over an InboundFrames: one coroutine per frame, none of an async generator's."""

    __slots__ = ("_queue", "_resampler")

    def __init__(self, queue: InboundFrames, resampler: Resampler | None) -> None:
        self._queue = queue
        self._resampler = resampler

    def __aiter__(self) -> _FrameIterator:
        return self

    async def __anext__(self) -> bytes:
        queue = self._queue
        frame = queue._frames.popleft() if queue._frames else await queue.get()
        if frame is None:
            raise StopAsyncIteration
        return frame if self._resampler is None else self._resampler.resample(frame)
