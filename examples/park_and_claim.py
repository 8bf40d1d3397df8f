"""A telephony platform to your code through callbridge: a call is parked, claimed and served.

    callbridge serve                                        # in one terminal
    python examples/park_and_claim.py ws://127.0.0.1:9100/  # in another

1. A control connection subscribes to incoming calls (`calls.subscribe`).
2. A voice peer calls the media ingress path, /rtvbp/media: here `callbridge call`, standing in
   for babelforce Cloud (it says 350 Hz, presses 4 and 2, hangs up after 4 s, and saves what
   it heard). callbridge answers as the RTVBP application and parks the call in a new media
   session; the subscriber gets `call.incoming` with the call's identity.
3. The controller claims the parked session with `session.attach` and adds a 700 Hz tone:
   the caller hears it. The caller's keys arrive as `dtmf` events.
4. The caller hangs up: `endpoint.rtvbp.ended` says so; the controller destroys the session.

A call that nobody claims within `rtvbp.park_timeout_secs` (30 s) is hung up ("not claimed").
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import wave
from pathlib import Path

import aiohttp
import numpy as np

from control_client import Controller


def strongest(path: Path) -> int:
    """The strongest frequency (Hz, rounded to 10) of the last second of a WAV file."""
    with wave.open(str(path)) as recording:
        rate = recording.getframerate()
        samples = np.frombuffer(recording.readframes(recording.getnframes()), "<i2")
    tail = samples[-rate:].astype(float)
    spectrum = np.abs(np.fft.rfft(tail * np.hanning(len(tail))))
    return int(round(int(np.argmax(spectrum)) * rate / len(tail), -1))


async def main(control_url: str) -> None:
    media_url = control_url.rstrip("/") + "/rtvbp/media"
    heard = Path(tempfile.mkdtemp()) / "heard.wav"
    async with aiohttp.ClientSession() as http:
        controller = Controller(await http.ws_connect(control_url))
        print("1. subscribe to incoming calls")
        await controller.request("calls.subscribe")

        print(f"2. a voice peer calls {media_url}")
        caller = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "callbridge",
            "call",
            media_url,
            "--quiet",
            "--tone=350",
            "--dtmf=42",
            "--dtmf-delay=1.5",
            "--hangup-after=4",
            f"--save={heard}",
            "--from=+4930123456",
            stdout=asyncio.subprocess.PIPE,
        )
        incoming = await controller.event("call.incoming")
        call = incoming["call"]
        print(f"   parked: call {call['id'][:8]}... from {call['from']}, codec {incoming['codec']}")
        listed = await controller.request("session.list")
        for session in listed["sessions"]:
            if session["session_id"] == incoming["session_id"]:
                print(f"   session.list: {session['state']}, calls {len(session['calls'])}")

        print("3. claim it and play a 700 Hz tone to the caller")
        await controller.request("session.attach", session_id=incoming["session_id"])
        await controller.request("endpoint.create_tone", tone="sine", frequency=700)
        keys = [(await controller.event("dtmf"))["digit"] for _ in range(2)]
        print(f"   the caller pressed {''.join(keys)}")

        print("4. the caller hangs up")
        ended = await controller.event("endpoint.rtvbp.ended")
        print(f"   the leg ended: {ended['reason']} ({ended['detail']})")
        await controller.request("session.destroy")
    output, _ = await caller.communicate()
    print("   callbridge call says:")
    for line in output.decode().splitlines():
        print(f"     {line}")
    print(f"   the caller heard {strongest(heard)} Hz")
    if caller.returncode != 0:
        raise SystemExit(f"callbridge call exited with {caller.returncode}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:9100/"))
