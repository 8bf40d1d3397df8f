"""File decoding with loops (`FilePlayer`), and shared playback (`shared: true`).

A `FilePlayer` decodes one source one 20 ms frame per media clock frame, `start_ms` and loops
included. A file endpoint has its own, or with `shared: true` joins the worker's one player of
its source (`SharedPlayback`), however many file endpoints in any sessions play it: the first
that asks during a clock frame decodes, the others get the same frame, so every listener hears
the same audio at the same time. The first endpoint's `start_ms` and `loop_count` apply; later
ones join mid-stream. The decode stops when its last endpoint leaves; a source whose playback
has ended starts a fresh decode for the next endpoint that asks for it.
"""

from __future__ import annotations

from pathlib import Path

from callbridge.media.audiofile import AudioFileReader
from callbridge.media.errors import MediaError

__all__ = ["FilePlayer", "SharedPlayback"]


class FilePlayer:
    """One decode of one source, with its loops (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        *,
        sample_rate: int,
        start_ms: int,
        loop_count: int | None,
        key: str = "",
    ) -> None:
        self.key = key
        """The `shared_playback_id` of a shared player ("" for an endpoint's own)."""
        self.start_ms = start_ms
        self.loops_left = loop_count
        """Extra plays still to come; None loops forever."""
        self.listeners = 0
        self.frames_decoded = 0
        self.ended = False
        self.error: str | None = None
        """Why the decode failed, once it did (playback then ends with an error)."""
        self._reader: AudioFileReader | None = AudioFileReader(path, sample_rate, start_ms)
        self._time: float | None = None
        self._frame: bytes | None = None

    def frame(self, now: float) -> bytes | None:
        """The frame of clock frame `now` (decoded by its first caller); None once ended."""
        if now != self._time:
            self._time = now
            self._frame = self._decode()
        return self._frame

    def seek(self, position_ms: int) -> None:
        """Continue from `position_ms` (MediaError, ValueError); nothing once ended."""
        if self._reader is not None:
            self._reader.seek(max(0, position_ms))

    def _decode(self) -> bytes | None:
        reader = self._reader
        if reader is None:
            return None
        try:
            frame = reader.read_frame()
            if frame is None and self.loops_left != 0:
                if self.loops_left is not None:
                    self.loops_left -= 1
                reader.seek(self.start_ms)
                frame = reader.read_frame()
        except MediaError as error:
            self.error = str(error)
            frame = None
        if frame is None:
            self.ended = True
            self.close()
            return None
        self.frames_decoded += 1
        return frame

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class SharedPlayback:
    """The shared players of one worker, by source key (the `shared_playback_id`)."""

    def __init__(self) -> None:
        self._players: dict[str, FilePlayer] = {}
        self.decodes_started = 0

    def join(
        self, key: str, path: Path, *, sample_rate: int, start_ms: int, loop_count: int | None
    ) -> FilePlayer:
        """The player of `key`, started on `path` if none is running (AudioFileReader errors
        propagate); the caller must `leave` it."""
        player = self._players.get(key)
        if player is None or player.ended:
            player = FilePlayer(
                path, sample_rate=sample_rate, start_ms=start_ms, loop_count=loop_count, key=key
            )
            self._players[key] = player
            self.decodes_started += 1
        player.listeners += 1
        return player

    def leave(self, player: FilePlayer) -> None:
        """One endpoint stopped playing `player`; the last one stops the decode."""
        player.listeners -= 1
        if player.listeners > 0:
            return
        player.close()
        if self._players.get(player.key) is player:
            del self._players[player.key]

    def __len__(self) -> int:
        """Players decoding now."""
        return len(self._players)
