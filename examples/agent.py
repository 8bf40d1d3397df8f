"""A small RTVBP agent: hears the caller at 16 kHz like a speech model would, hangs up on #.

callbridge serve examples.agent:app
callbridge call ws://127.0.0.1:9100/rtvbp --dtmf 12# --save heard.wav
"""

import callbridge

app = callbridge.Application(choose_codec=callbridge.prefer_sample_rate(16000))


@app.call
async def agent(call: callbridge.Call) -> None:
    print(f"call {call.info.id} from {call.info.from_} using {call.codec.id}")

    async def keys() -> None:
        async for key in call.dtmf():
            await call.output_transcript_done(f"you pressed {key.digit}")
            if key.digit == "#":
                await call.hangup("caller pressed #")

    call.spawn(keys())
    async for frame in call.audio(sample_rate=16000):  # the rate a speech model wants
        await call.send_audio(frame, sample_rate=16000)  # back to the caller, converted
