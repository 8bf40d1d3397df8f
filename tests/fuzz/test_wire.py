"""A short run of the wire fuzzer against a real `callbridge serve` (`make fuzz` runs 60 s)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_server_survives_hostile_clients_and_leaks_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "wire_fuzz.py", "--seconds", "8", "--seed", "7"],
        cwd=BENCHMARKS,
        capture_output=True,
        text=True,
        timeout=110,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "leaked: sessions 0, endpoints 0, port pairs 0, tasks 0, fds 0, udp sockets 0" in report
    assert ", 0 tracebacks" in report
