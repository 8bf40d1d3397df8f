"""Run pytest scenarios in a fresh network namespace whose only interface is loopback.

Chromium gathers its host candidates on the machine's interfaces, never on 127.0.0.1 while any
other interface exists. In a namespace with only `lo`, loopback is all it has, so every packet of
a browser scenario (control WebSocket, ICE, DTLS, SRTP, DevTools) stays on loopback. Making
the namespace needs root or CAP_SYS_ADMIN, or a kernel that allows unprivileged user namespaces.
"""

from __future__ import annotations

import os
import shutil
import signal
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


UNSHARE_COMMANDS = (
    ("unshare", "--net"),
    ("unshare", "--user", "--map-root-user", "--net"),
)
"""As root (or with CAP_SYS_ADMIN); else inside an unprivileged user namespace, where the
kernel allows them."""


def unshare_command() -> tuple[str, ...] | str:
    """The command prefix that makes a loopback-only namespace here, or why none can be made."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "needs util-linux's unshare and iproute2's ip to make a loopback-only namespace"
    errors = []
    for command in UNSHARE_COMMANDS:
        probe = subprocess.run(
            [*command, "ip", "link", "set", "lo", "up"], capture_output=True, text=True
        )
        if probe.returncode == 0:
            return command
        errors.append(probe.stderr.strip())
    return (
        "cannot create a network namespace: `unshare --net` needs root or CAP_SYS_ADMIN, and"
        f" unprivileged user namespaces are not allowed here ({'; '.join(errors)})"
    )


@dataclass(frozen=True)
class Outcome:
    """One scenario's result: passed, or the failure text pytest reported."""

    passed: bool
    details: str


def run_in_namespace(
    unshare: tuple[str, ...], module: Path, report: Path, timeout_s: float
) -> dict[str, Outcome]:
    """Run every test of `module` with pytest inside a new loopback-only namespace made with
    `unshare` (from `unshare_command`); returns {test name: outcome}, or {"": outcome} with the
    whole pytest output when it produced no report."""
    command = [
        *unshare,
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
    process = subprocess.Popen(
        command,
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a hang ends with every browser in it
    )
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return {"": Outcome(False, f"the scenarios took over {timeout_s:g} s:\n{output}")}
    if not report.exists():
        return {"": Outcome(False, output)}
    outcomes: dict[str, Outcome] = {}
    for case in ElementTree.parse(report).iter("testcase"):
        problems = [child for child in case if child.tag in ("failure", "error", "skipped")]
        text = "\n".join(f"{child.get('message') or ''}\n{child.text or ''}" for child in problems)
        outcomes[case.get("name", "")] = Outcome(not problems, text or output)
    return outcomes
