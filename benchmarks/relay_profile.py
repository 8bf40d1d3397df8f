"""Where a Python relay's time goes: py-spy samples of a running process, summarised.

`record(pid, seconds, cpu)` runs `py-spy record --format raw` (collapsed stacks, no pause of the
target: --nonblocking) pinned to `cpu`; `summarise` turns the stacks into the functions with
the most samples on top of the stack (self) and anywhere on it (inclusive), as % of all samples.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

__all__ = ["record", "summarise"]


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, cpu: int, rate: int = 250) -> str | None:
    """Collapsed stacks of `pid` over `seconds`; None when py-spy is not installed."""
    binary = _py_spy()
    if binary is None:
        return None
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "stacks.txt"
        subprocess.run(
            [
                binary,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, round(seconds))),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--nonblocking",
                "--output",
                str(output),
            ],
            check=False,
            capture_output=True,
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
        )
        return output.read_text() if output.exists() else None


def _frame_name(frame: str) -> str:
    """'function (path/module.py:line)' -> 'module.function'."""
    function, _, location = frame.partition(" (")
    module = location.rsplit("/", 1)[-1].split(".py", 1)[0] if location else "?"
    return f"{module}.{function}"


def summarise(stacks: str, top: int = 12) -> list[str]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in stacks.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame_name(frame) for frame in stack.split(";")]
        if frames:
            own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return ["(no samples)"]
    lines = [f"{total} samples; self (top of stack):"]
    lines += [f"  {count / total * 100:5.1f}%  {name}" for name, count in own.most_common(top)]
    lines.append("inclusive (anywhere on the stack; frames on every sample left out):")
    below_root = [(name, count) for name, count in inclusive.items() if count < 0.97 * total]
    below_root.sort(key=lambda item: -item[1])
    lines += [f"  {count / total * 100:5.1f}%  {name}" for name, count in below_root[:top]]
    return lines
