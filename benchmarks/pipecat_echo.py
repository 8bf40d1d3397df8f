"""CPU per call of a Pipecat echo pipeline on RTVBP calls, against the plain SDK echo.

    .venv/bin/python benchmarks/pipecat_echo.py                    # 20 and 50 calls, ~2 minutes
    .venv/bin/python benchmarks/pipecat_echo.py --calls 100

Both servers are real `callbridge serve` processes pinned to CPU 0, loaded by ws_load.py's
generator pinned to the other CPUs (N paced L16/8000 RTVBP calls on the shared listener, one
20 ms frame per call every 20 ms, each echo matched by its send time). "sdk" is
`callbridge.apps.echo:app` (``send_audio`` of each frame); "pipecat" is the `app` below:
CallbridgeTransport input -> an echo processor -> CallbridgeTransport output, a WorkerRunner and
PipelineWorker per call, pipeline rates equal to the call's (8 kHz) so no resampling is
measured, only Pipecat's frame machinery and real-time output pacing. Calls per worker is 100 %
of one core divided by CPU per call. Figures only: nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loguru import logger
from pipecat.frames.frames import Frame, InputAudioRawFrame, OutputAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

import callbridge
import rtvbp_echo  # the sibling benchmark: its callbridge server and measurement
import websocket_floor  # the table row and the load options
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, action="append", help="call counts (repeatable)")
    websocket_floor.add_load_options(parser)
    options = parser.parse_args()
    print(f"RTVBP echo, L16/8000 20 ms frames, {options.duration:.0f} s measured per step")
    print(f"{websocket_floor.HEADING}  calls/worker")
    for calls in options.calls or [20, 50]:
        sdk, pipecat = (
            rtvbp_echo.measure_callbridge(
                "shared", calls, options, label=kind, application=APPLICATIONS[kind], cwd=HERE
            )
            for kind in ("sdk", "pipecat")
        )
        for measured, baseline in ((sdk, None), (pipecat, sdk)):
            per_call = measured.cpu_percent / max(measured.load.connected, 1)
            capacity = 100 / per_call if per_call else float("inf")
            print(f"{websocket_floor.row(measured, baseline)} {capacity:8.0f}", flush=True)


if __name__ == "__main__":
    main()
