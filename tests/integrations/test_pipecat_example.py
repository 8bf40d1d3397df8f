"""The guide's bot and examples/pipecat_bot.py as users run them: `callbridge serve` and
`callbridge call` processes."""

from __future__ import annotations

import os
import wave
from pathlib import Path

from examples.pipecat_bot import prompt_audio

from tests.integrations.test_pipecat import peak_frequency
from tests.server.test_cli import REPO, call, running_server

GUIDE = REPO / "docs" / "pipecat.md"


def window_peaks(path: Path, seconds: float = 0.05) -> list[float]:
    with wave.open(str(path)) as heard:
        rate = heard.getframerate()
        pcm = heard.readframes(heard.getnframes())
    step = int(rate * seconds) * 2
    return [
        round(peak_frequency(pcm[start : start + step], rate))
        for start in range(0, len(pcm) - step + 1, step)
    ]


def first_run(peaks: list[float], hertz: float, length: int) -> int:
    """Where `length` windows in a row first peak at `hertz`."""
    for start in range(len(peaks) - length + 1):
        if all(peak == hertz for peak in peaks[start : start + length]):
            return start
    raise AssertionError(f"no {length} windows at {hertz} Hz in {peaks}")


def test_echo_bot_with_its_dtmf_menu(tmp_path: Path) -> None:
    saved = tmp_path / "heard.wav"
    prompt, rate = prompt_audio()
    after_prompt = len(prompt) / (2 * rate) + 0.5
    with running_server("examples.pipecat_bot:app") as port:
        result = call(port, "--dtmf", "1#", "--dtmf-delay", str(after_prompt), "--save", str(saved))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ended        application-hangup (caller pressed #)" in result.stdout
    peaks = window_peaks(saved)
    # After the prompt (a tone, or speech from espeak-ng): the caller's 440 Hz tone echoed,
    # the beep for 1, then the goodbye tone for #; each a run of windows, unlike speech.
    echo, beep, goodbye = (first_run(peaks, hertz, 3) for hertz in (440, 1000, 520))
    assert echo < beep < goodbye


def test_the_guides_bot_runs_as_written(tmp_path: Path) -> None:
    guide = GUIDE.read_text()
    section = guide.split("## A bot in 30 lines", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(code.splitlines()) <= 40
    (tmp_path / "echo_bot.py").write_text(code)
    saved = tmp_path / "heard.wav"
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    with running_server("echo_bot:app", env={"PYTHONPATH": path}) as port:
        result = call(port, "--dtmf", "#", "--dtmf-delay", "1", "--save", str(saved))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ended        application-hangup (caller pressed #)" in result.stdout
    first_run(window_peaks(saved), 440, 10)


def test_served_with_the_servers_authentication() -> None:
    secret = {"CALLBRIDGE_RTVBP__AUTH": "static", "CALLBRIDGE_RTVBP__STATIC_TOKENS": '["s3cret"]'}
    with running_server("examples.pipecat_bot:app", env=secret) as port:
        refused = call(port, "--hangup-after", "0.5")
        admitted = call(port, "--hangup-after", "0.5", "--token", "s3cret")
    assert refused.returncode == 1 and "401" in refused.stdout, refused.stdout
    assert admitted.returncode == 0, admitted.stdout + admitted.stderr
    assert "ended        hangup (hangup)" in admitted.stdout
