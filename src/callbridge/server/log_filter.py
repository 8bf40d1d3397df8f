"""Log levels as filter strings such as ``info`` or ``warn,callbridge.engine=debug``.

The syntax is the one of Rust's tracing ``EnvFilter`` (what rtpbridge's ``log_level`` takes): a
comma list of directives, each a level (the default for everything), ``target=level`` or a bare
``target`` (everything from it). Targets are logger names; ``::`` is read as ``.``, and
``rtpbridge`` means callbridge, so an rtpbridge configuration keeps its meaning. Span filters
(``target[span]=level``) have no counterpart in Python logging: the span part is ignored.
Levels: ``trace`` and ``debug`` are DEBUG, ``warn``/``warning``, ``error``, and ``off``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

__all__ = ["LogFilter", "parse_log_filter"]

OFF: Final = logging.CRITICAL + 10
_LEVELS: Final = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": OFF,
}
_TARGET_ALIASES: Final = {"rtpbridge": "callbridge"}


@dataclass(frozen=True)
class LogFilter:
    """The default level and the levels of named loggers (Python logging levels)."""

    default: int = logging.INFO
    targets: dict[str, int] = field(default_factory=dict)

    def apply(self, log_format: str) -> None:
        """Configure the root logger and every named one."""
        logging.basicConfig(level=self.default, format=log_format)
        logging.getLogger().setLevel(self.default)
        for name, level in self.targets.items():
            logging.getLogger(name).setLevel(level)


def parse_log_filter(text: str) -> LogFilter:
    """Parse a filter string; ValueError says which directive is wrong."""
    default = logging.INFO
    targets: dict[str, int] = {}
    directives = [part.strip() for part in text.split(",") if part.strip()]
    if not directives:
        raise ValueError("empty log filter")
    for directive in directives:
        target, separator, level_text = directive.rpartition("=")
        if not separator:
            if directive.lower() in _LEVELS:
                default = _LEVELS[directive.lower()]
                continue
            target, level_text = directive, "trace"
        level = _LEVELS.get(level_text.strip().lower())
        if level is None:
            raise ValueError(f"log filter {directive!r}: unknown level {level_text!r}")
        name = _logger_name(target)
        if not name:
            raise ValueError(f"log filter {directive!r}: no target before '='")
        targets[name] = level
    return LogFilter(default, targets)


def _logger_name(target: str) -> str:
    name = target.split("[", 1)[0].strip().replace("::", ".")
    head, dot, rest = name.partition(".")
    return _TARGET_ALIASES.get(head, head) + dot + rest
