"""The RTVBP media examples (docs/rtvbp-media.md) against a real `callbridge serve`."""

from __future__ import annotations

import subprocess
import sys

from tests.server.test_cli import REPO, running_server


def run_example(name: str, port: int) -> str:
    result = subprocess.run(
        [sys.executable, f"examples/{name}", f"ws://127.0.0.1:{port}/"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_rtp_to_agent_example_runs() -> None:
    with running_server() as port:
        output = run_example("rtp_to_agent.py", port)
    assert "the leg is connected" in output
    assert "rtvbp L16/8000" in output
    assert "the phone hears 440 Hz" in output
    assert "the agent answers with a 700 Hz beep" in output
    assert "the leg ended: application-hangup (caller pressed #)" in output


def test_park_and_claim_example_runs() -> None:
    with running_server() as port:
        output = run_example("park_and_claim.py", port)
    assert "parked: call" in output and "from +4930123456, codec L16/8000" in output
    assert "session.list: orphaned, calls 1" in output
    assert "the caller pressed 42" in output
    assert "the leg ended: voice-hangup (hangup)" in output
    assert "ended        hangup (hangup)" in output
    assert "the caller heard 700 Hz" in output
