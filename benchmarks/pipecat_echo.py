"""CPU per call of a Pipecat echo pipeline on RTVBP calls, against the plain SDK echo.

    .venv/bin/python benchmarks/pipecat_echo.py                    # 20 and 50 calls, ~2 minutes
    .venv/bin/python benchmarks/pipecat_echo.py --calls 100

Both servers are real `callbridge serve` processes pinned to CPU 0, loaded by rtvbp_echo.py's
generator pinned to CPU 1 (N paced L16/8000 calls, one 20 ms frame per call every 20 ms, each
echo matched by its send time). "sdk" is `callbridge.apps.echo:app` (``send_audio`` of each
frame); "pipecat" is the `app` below: CallbridgeTransport input -> an echo processor ->
CallbridgeTransport output, a WorkerRunner and PipelineWorker per call, pipeline rates equal to
the call's (8 kHz) so no resampling is measured, only Pipecat's frame machinery and real-time
output pacing. Calls per worker is 100 % of one core divided by CPU per call. Figures only:
nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

import callbridge
import rtvbp_echo  # the sibling benchmark: its load generator, measurement and table row
from callbridge.integrations.pipecat import CallbridgeTransport, pipecat_application

HERE = Path(__file__).resolve().parent
APPLICATIONS = {"sdk": "callbridge.apps.echo:app", "pipecat": "pipecat_echo:app"}

logger.remove()
logger.add(sys.stderr, level="WARNING")


class Echo(FrameProcessor):
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self.push_frame(OutputAudioRawFrame(frame.audio, frame.sample_rate, 1))
        else:
            await self.push_frame(frame, direction)


async def bot(call: callbridge.Call) -> PipelineWorker:
    transport = CallbridgeTransport(call)
    pipeline = Pipeline([transport.input(), Echo(), transport.output()])
    rates = PipelineParams(audio_in_sample_rate=8000, audio_out_sample_rate=8000)
    return PipelineWorker(pipeline, params=rates, enable_rtvi=False)


app = pipecat_application(bot)


def start_server(kind: str, port: int) -> subprocess.Popen[bytes]:
    """rtvbp_echo's server start, for the two applications compared here."""
    command = [sys.executable, "-m", "callbridge", "serve", APPLICATIONS[kind]]
    command += ["--listen", f"127.0.0.1:{port}", "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=HERE, preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    rtvbp_echo.wait_for_port(port)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, action="append", help="call counts (repeatable)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per step")
    options = parser.parse_args()
    rtvbp_echo.start_server = start_server
    print(f"RTVBP echo, L16/8000 20 ms frames, {options.duration:.0f} s measured per step")
    print(
        "server      calls  conn   CPU      CPU/call   us/frame ratio"
        "  RSS/call   p50ms   p99ms   lost   calls/worker"
    )
    for calls in options.calls or [20, 50]:
        sdk = rtvbp_echo.measure("sdk", calls, options.warmup, options.duration)
        pipecat = rtvbp_echo.measure("pipecat", calls, options.warmup, options.duration)
        for label, measured, baseline in (("sdk", sdk, None), ("pipecat", pipecat, sdk)):
            per_call = measured.cpu_percent / max(measured.connected, 1)
            capacity = 100 / per_call if per_call else float("inf")
            print(f"{rtvbp_echo.row(label, measured, baseline)} {capacity:8.0f}", flush=True)


if __name__ == "__main__":
    main()
