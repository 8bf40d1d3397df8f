"""One exception hierarchy for the pure media layer; callers translate it at their boundary."""

from __future__ import annotations


class MediaError(Exception):
    """Base class of every error raised by callbridge.media."""


class CodecError(MediaError):
    """A codec that is unsupported, cannot be opened, or rejects its input."""


class AudioFileError(MediaError):
    """An audio file that is missing, unreadable, corrupt, or in an unsupported format."""
