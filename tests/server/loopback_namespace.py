"""Run pytest scenarios in a fresh network namespace whose only interface is loopback.

Chromium gathers its host candidates on the machine's interfaces, never on 127.0.0.1 while any
other interface exists. In a namespace with only `lo`, loopback is all it has, so every packet of
a browser scenario (control WebSocket, ICE, DTLS, SRTP, DevTools) stays on loopback. Creating
the namespace needs root or CAP_SYS_ADMIN (`unshare --net`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]


def only_loopback() -> bool:
    """True inside such a namespace: `lo` is the one interface."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def namespace_unavailable() -> str | None:
    """Why a loopback-only namespace cannot be made here, or None when it can."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs util-linux's unshare and iproute2's ip to make a loopback-only namespace"
    probe = subprocess.run(
        ["unshare", "--net", "ip", "link", "set", "lo", "up"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return (
            "cannot create a network namespace (`unshare --net` needs root or CAP_SYS_ADMIN): "
            + probe.stderr.strip()
        )
    return None


@dataclass(frozen=True)
class Outcome:
    """One scenario's result: passed, or the failure text pytest reported."""

    passed: bool
    details: str


def run_in_namespace(module: Path, report: Path, timeout_s: float) -> dict[str, Outcome]:
    """Run every test of `module` with pytest inside a new loopback-only namespace; returns
    {test name: outcome}. The whole pytest output is in the failure text of a missing test."""
    command = [
        "unshare",
        "--net",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "sh",
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        f"--junitxml={report}",
        str(module),
    ]
    completed = subprocess.run(
        command, cwd=REPOSITORY, capture_output=True, text=True, timeout=timeout_s
    )
    output = completed.stdout + completed.stderr
    if not report.exists():
        return {"": Outcome(False, output)}
    outcomes: dict[str, Outcome] = {}
    for case in ElementTree.parse(report).iter("testcase"):
        problems = [child for child in case if child.tag in ("failure", "error", "skipped")]
        text = "\n".join(f"{child.get('message') or ''}\n{child.text or ''}" for child in problems)
        outcomes[case.get("name", "")] = Outcome(not problems, text or output)
    return outcomes
