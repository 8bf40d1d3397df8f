"""The same transport as examples/pipecat_bot.py with a voice agent's services: where STT, the LLM
and TTS plug in. It needs the services' extras and keys, so it is not run by the tests:

    pip install 'callbridge[pipecat]' 'pipecat-ai[deepgram,openai,cartesia]'
    export DEEPGRAM_API_KEY=... OPENAI_API_KEY=... CARTESIA_API_KEY=... CARTESIA_VOICE=...
    callbridge serve examples.pipecat_agent:app
    callbridge call ws://127.0.0.1:9100/rtvbp --rate 16000 --wav question.wav --save answer.wav

Swap any service for another Pipecat service of the same kind; the transport does not care.
"""

from __future__ import annotations

import os

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import LLMRunFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.services.cartesia.tts import CartesiaTTSService
from pipecat.services.deepgram.stt import DeepgramSTTService
from pipecat.services.openai.llm import OpenAILLMService

import callbridge
from callbridge.integrations.pipecat import (
    CallbridgeTransport,
    TranscriptObserver,
    pipecat_application,
)


async def bot(call: callbridge.Call) -> PipelineWorker:
    transport = CallbridgeTransport(call)

    # Speech to text: the caller's audio, at the pipeline's input rate, becomes TranscriptionFrame.
    stt = DeepgramSTTService(api_key=os.environ["DEEPGRAM_API_KEY"])

    # The conversation: the call's identity is there for the prompt.
    context = LLMContext(
        messages=[
            {
                "role": "system",
                "content": "You are a friendly phone agent. Keep answers short; no markup. "
                f"The caller's number is {call.info.from_}.",
            }
        ]
    )
    # Silero's voice activity detection (its model ships with Pipecat) decides when the caller
    # speaks; speaking over the bot interrupts it, which the transport turns into RTVBP barge-in.
    aggregators = LLMContextAggregatorPair(
        context, user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer())
    )

    # The LLM: the aggregated context in, text out.
    llm = OpenAILLMService(api_key=os.environ["OPENAI_API_KEY"])

    # Text to speech: audio at the pipeline's output rate; the transport converts it to the call's.
    tts = CartesiaTTSService(
        api_key=os.environ["CARTESIA_API_KEY"],
        settings=CartesiaTTSService.Settings(voice=os.environ["CARTESIA_VOICE"]),
    )

    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            aggregators.user(),
            llm,
            tts,
            transport.output(),
            aggregators.assistant(),
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=24000),
        # What the caller said and what the agent says, in babelforce's voice console.
        observers=[TranscriptObserver(transport)],
        enable_rtvi=False,  # RTVI serves browser clients; a phone call has none
    )

    @transport.event_handler("on_client_connected")
    async def greet(transport: CallbridgeTransport, call: callbridge.Call) -> None:
        await worker.queue_frames([LLMRunFrame()])

    return worker


app = pipecat_application(bot, choose_codec=callbridge.prefer_sample_rate(16000))
