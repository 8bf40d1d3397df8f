"""Real-time RTP load generator for the media benchmarks (media_sessions, rtpengine_compare).

It runs in its own process (`generator_entry`, a multiprocessing target) and plays every
party of N sessions: one UDP socket per party, one 20 ms packet per party in real time, each
party at a random 1 ms phase slot. Latency is the kernel's arrival timestamp of a datagram
(SO_TIMESTAMPNS) minus the send time taken just before `sendto`, both CLOCK_REALTIME on this
machine: the generator's own scheduling delay on receive does not count against the relay.

Two ways to match what comes out to what went in:
  payload  passthrough. Every packet carries (sender leg, per-leg count, send time) and a body
           derived from them; the receiver checks that the body arrived intact and came from a
           party of its own session ("corrupt" counts the ones that did not).
  burst    transcoding, mixing, echo. The payload changes on the way, so every party sends a
           20 ms 1 kHz burst every 200 ms (100 ms with at most two parties; quiet or low noise
           otherwise; a session's parties are staggered by 60 ms) and a receiver times the
           first decoded frame that carries a burst against the latest burst sent by another
           party of its session (by itself when a session has one party: an echo).

Measurement windows: after a warm-up the generator measures `windows` windows of `duration`
seconds, `GAP_S` apart, while sending goes on without a pause. A packet or burst belongs to
the window in which it was *sent*; loss = expected - matched for those. At the start and end
of each window it sends "start" / "stop" over the pipe (the parent samples the relay's CPU
then) and, `DRAIN_S` after the end, the window's figures (a dict). Figures include the
generator's own health (its CPU share and how late its send slots ran), so a caller can tell
when the load generator, not the relay, is the limit.

The payload method (without webrtc parties) and the burst method (when every party is G.711:
PCMU or PCMA) run natively: benchmarks/rtp_blast.c, compiled with gcc -O2 on first use into
~/.cache/callbridge-bench/ (one binary per source version), runs as a child of the generator
process. That process still opens the sockets and speaks the pipe protocol below; for the burst
method it also encodes the parties' frame cycles (`_burst_frames`) and hands them to the C
program, which sends them as they are. The C program inherits the sockets, sends (sendto per
packet, clock_nanosleep between 1 ms slots), receives (epoll, recvmmsg, SO_TIMESTAMPNS), decodes
G.711 bursts with a table per law, and measures exactly as the Python generator does (same
packets, windows, matching and figures) at a fraction of its CPU. Payload: the Python one runs
late beyond about 300 passthrough sessions on one core, the C one paces about 1000, where the
kernel's own UDP work per packet is the limit (about 7 us per packet sent and received on the
benchmark VM, over 90 % of the C program's time). Burst, three PCMU parties: 15 % of its core
at 100 sessions against the Python one's 42 % (2026-12-04). It prints "start" / "stop" and a
JSON line of figures per window, which this process forwards to the pipe. A run with any party
that is not G.711 (Opus, webrtc) uses the Python generator for the burst method, for every
party. The environment variable CALLBRIDGE_BENCH_GENERATOR=python runs the Python generator
instead; "native" (the default) uses the C one whenever gcc builds it, and otherwise says why
and runs the Python one.

A "webrtc" party is Opus over WebRTC (benchmarks/webrtc_load.py): before the load starts it
connects (STUN check, DTLS handshake), then protects what it sends and unprotects what it
receives with SRTP, as a browser would; its figures count as "opus".

Pipe protocol: child sends the list of its ports (session-major, party-minor), a webrtc party
as [port, its DTLS fingerprint]; the parent answers with one target per port: an int port on
127.0.0.1, or (port, payload_type) when the relay chose the payload type (e.g. a dynamic Opus
PT), or for a webrtc party a dict (port, payload_type and `webrtc_load.answer_credentials`);
then "start", "stop", figures per window.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import resource
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FRAME_S",
    "LoadWindows",
    "generator_entry",
    "offer_sdp",
    "percentiles",
]

FRAME_S = 0.02
BURST_EVERY = 10
"""A burst every 10 frames (200 ms) per party; every 5 (100 ms) when a session has at most two
parties (more samples; the other party's burst still comes 3 frames later)."""
BURST_STAGGER = 3
"""Party p of a session bursts on frames where frame % 10 == 3 * p."""
BURST_THRESHOLD = 4000
"""Peak level (int16) of a decoded frame that carries a burst (the burst's own peak is 16000)."""
QUIET_THRESHOLD = 2000
"""Below this peak a frame is quiet again and the next loud frame is a new burst."""
MATCH_S = 0.1
"""A burst heard later than this after the latest one sent counts as unmatched."""
G711 = ("pcmu", "pcma")
"""The codecs whose bursts the native generator decodes."""
WARMUP_S = 1.0
"""Sending before the first window (the relay creates codecs, learns addresses)."""
GAP_S = 0.5
"""Between windows: the previous window's stragglers arrive and its figures are computed."""
DRAIN_S = 0.3
"""How long after a window's end its packets may still arrive."""
SLOTS = 20
"""Phase slots per 20 ms frame (1 ms apart)."""
PAYLOAD_BYTES = 160
SAMPLES_KEPT = 20000
"""A window's latency samples go into its figures (for pooled percentiles) up to this many."""
_PAYLOAD_HEADER = struct.Struct("!IId")  # sender leg, per-leg packet count, send time (s)
_BODY = PAYLOAD_BYTES - _PAYLOAD_HEADER.size
_PATTERN = random.Random(20).randbytes(_BODY + 256)
"""Body of packet k of leg i: _PATTERN[o : o + _BODY] with o = (7 * i + k) % 256."""
_RTP_HEADER = struct.Struct("!BBHII")
_HEADERS = struct.Struct("!BBHIIIId")  # RTP header + payload header in one pack
_BODY_START = 12 + _PAYLOAD_HEADER.size
LOCAL = ("127.0.0.1", 0)
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
"""Linux: the kernel stamps each datagram's arrival (CLOCK_REALTIME, struct timespec)."""
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY_BYTES = socket.CMSG_SPACE(_TIMESPEC.size)
GENERATOR_SWITCH = "CALLBRIDGE_BENCH_GENERATOR"
"""Environment: "python" runs the Python generator for every method; "native" (the default)
runs rtp_blast.c when it compiles and can play the parties (`_runs_natively`)."""
_NATIVE_SOURCE = Path(__file__).resolve().with_name("rtp_blast.c")
PAUSE_S = 0.3
"""After the activation send, before the load starts."""


def offer_sdp(codec: str, port: int, payload_type: int | None = None) -> str:
    """A one-party SDP offer (PCMU, PCMA or Opus, plus telephone-event) for a generator socket."""
    payload_type = _payload_type(codec) if payload_type is None else payload_type
    if codec == "opus":
        rtpmap = f"{payload_type} opus/48000/2\r\na=fmtp:{payload_type} stereo=0;sprop-stereo=0"
    else:
        rtpmap = f"{payload_type} {'PCMA' if codec == 'pcma' else 'PCMU'}/8000"
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {payload_type} 101\r\na=rtpmap:{rtpmap}\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def _payload_type(codec: str) -> int:
    """The payload type a party offers: 111 for Opus, the static one for G.711."""
    return {"opus": 111, "pcma": 8}.get(codec, 0)


def percentiles(values: Sequence[float]) -> tuple[int, float, float]:
    """(count, p50 ms, p99 ms) of latencies in seconds."""
    if not values:
        return (0, float("nan"), float("nan"))
    array = np.asarray(values) * 1000.0
    return (len(values), float(np.percentile(array, 50)), float(np.percentile(array, 99)))


def _burst_frames(codec: str, position: int, noise: float, every: int) -> list[bytes]:
    """The payload cycle of one party: one 1 kHz burst frame, `every` - 1 quiet frames.

    Quiet is digital silence, or with `noise` > 0 Gaussian noise of that RMS (in int16 units;
    ~100-300 is a quiet room), which keeps a relay's encoders doing realistic work.
    """
    from callbridge.media.codecs import OPUS, PCMA, PCMU, create_encoder

    spec = {"opus": OPUS, "pcma": PCMA}.get(codec, PCMU)
    encoder = create_encoder(spec)
    samples = spec.sample_rate // 50
    times = np.arange(samples) / spec.sample_rate
    burst = np.sin(2 * np.pi * 1000 * times) * 16000
    generator = np.random.default_rng(position)
    frames = []
    for frame in range(every * 2):  # two cycles; keep the second (settled encoder)
        is_burst = frame % every == BURST_STAGGER * position
        signal = generator.normal(0.0, noise, samples) if noise else np.zeros(samples)
        if is_burst:
            signal = signal + burst
        pcm = np.clip(signal, -32768, 32767).astype("<i2").tobytes()
        frames.append(encoder.encode(pcm))
    return frames[every:]


def _burst_cycles(codecs: tuple[str, ...], noise: float) -> dict[tuple[str, int], list[bytes]]:
    """Every party's payload cycle (burst method), by (codec, position in its session)."""
    every = BURST_EVERY if len(codecs) > 2 else BURST_EVERY // 2
    return {
        (codec, position): _burst_frames(codec, position, noise, every)
        for position, codec in enumerate(_codec(party) for party in codecs)
    }


def _codec(party: str) -> str:
    """The codec a party sends: a webrtc party's is Opus."""
    return "opus" if party == "webrtc" else party


class LoadWindows:
    """The measurement windows, time.time() seconds: [start_k, start_k + duration)."""

    def __init__(self, first_start: float, duration: float, count: int) -> None:
        self.first_start = first_start
        self.duration = duration
        self.period = duration + GAP_S
        self.count = count

    def start(self, window: int) -> float:
        return self.first_start + window * self.period

    def index(self, moment: float) -> int:
        """The window `moment` falls in, or -1."""
        offset = moment - self.first_start
        if offset < 0:
            return -1
        window = int(offset // self.period)
        if window >= self.count or offset - window * self.period >= self.duration:
            return -1
        return window


class _Leg:
    """One party: its socket, what it sent and heard, per window."""

    def __init__(
        self, index: int, session: int, position: int, width: int, codec: str, method: str
    ) -> None:
        self.index = index
        self.session = session
        self.position = position
        self.width = width
        self.codec = codec
        self.method = method
        self.payload_type = _payload_type(codec)
        self.step = 960 if codec == "opus" else 160
        self.sock: socket.socket | None = None
        self.send_errors = 0
        self.target: tuple[str, int] | None = None
        self.ssrc = random.getrandbits(32)
        self.sequence = random.getrandbits(16)
        self.timestamp = random.getrandbits(32)
        self.slot = random.randrange(SLOTS)
        self.count = 0
        self.windows: LoadWindows | None = None
        self.cycle: list[bytes] = []
        self.template = bytearray(12 + PAYLOAD_BYTES)
        self.armed = True
        self.decoder: Any = None
        self.recent: list[deque[tuple[float, int]]] = []
        self.sent: list[int] = []
        self.bursts: list[int] = []
        self.arrived: list[int] = []
        self.matched: list[int] = []
        self.unmatched: list[int] = []
        self.corrupt: list[int] = []
        self.opus_bytes: list[int] = []
        self.opus_stereo: list[int] = []
        self.latencies: list[list[float]] = []
        self.link: Any = None
        """A `webrtc_load.WebRtcLink` for a webrtc party, else None."""

    def measure(self, windows: LoadWindows) -> None:
        self.windows = windows
        names = ("sent", "bursts", "arrived", "matched", "unmatched", "corrupt")
        for name in (*names, "opus_bytes", "opus_stereo"):
            setattr(self, name, [0] * windows.count)
        self.latencies = [[] for _ in range(windows.count)]

    def bind(self) -> int:
        """Bind this party's socket (kernel receive timestamps on); returns its port."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.bind(LOCAL)
        sock.setblocking(False)
        self.sock = sock
        return int(sock.getsockname()[1])

    def open(self, loop: asyncio.AbstractEventLoop) -> int:
        """`bind`, and read the socket on `loop`."""
        port = self.bind()
        assert self.sock is not None
        loop.add_reader(self.sock.fileno(), self._readable)
        return port

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.sock is not None:
            loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None

    def send_frame(self, frame: int) -> None:
        """Send this party's packet for `frame` on its own socket."""
        assert self.sock is not None
        packet = self.stamp(frame)
        if self.link is not None:
            packet = self.link.protect(packet)
        try:
            self.sock.sendto(packet, self.target)  # type: ignore[arg-type]
        except OSError:
            self.send_errors += 1  # counted as loss by the receiving party

    def _readable(self) -> None:
        """One datagram per wake-up (epoll is level-triggered: the loop calls again while more
        are queued). Its arrival time is the kernel's, so a busy generator does not add its own
        delay to the relay's latency."""
        assert self.sock is not None
        try:
            data, ancillary, _, _ = self.sock.recvmsg(2048, _ANCILLARY_BYTES)
        except OSError:  # nothing queued, or an ICMP error reported on the socket
            return
        arrival = 0.0
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                arrival = seconds + nanoseconds * 1e-9
        if self.link is not None:
            if not data or not 127 < data[0] < 192:  # STUN or DTLS: the handshake
                for reply in self.link.handle(data):
                    self.sock.sendto(reply, self.target)  # type: ignore[arg-type]
                return
            if self.link.srtp is None:
                return
            unprotected = self.link.srtp.unprotect(data, time.monotonic())
            if unprotected is None:
                return  # RTCP, or a packet that does not authenticate
            data = unprotected
        self.receive(data, arrival or time.time())

    def stamp(self, frame: int) -> bytes | bytearray:
        """This party's packet for `frame`, to be sent at once: the send time is taken here.

        In the payload method the packet is `template`, rewritten in place."""
        data: bytes | bytearray
        if self.method == "payload":
            data = self.template
            count = self.count
            offset = (7 * self.index + count) & 0xFF
            data[_BODY_START:] = _PATTERN[offset : offset + _BODY]
            now = time.time()
            _HEADERS.pack_into(
                data,
                0,
                0x80,
                self.payload_type,
                self.sequence,
                self.timestamp,
                self.ssrc,
                self.index,
                count & 0xFFFFFFFF,
                now,
            )
        else:
            phase = frame % len(self.cycle)
            data = (
                _RTP_HEADER.pack(0x80, self.payload_type, self.sequence, self.timestamp, self.ssrc)
                + self.cycle[phase]
            )
            now = time.time()
            if phase == BURST_STAGGER * self.position:
                self.recent[self.session].append((now, self.index))
                window = self.windows.index(now) if self.windows else -1
                if window >= 0:
                    self.bursts[window] += 1
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + self.step) & 0xFFFFFFFF
        self.count += 1
        if self.windows is not None:
            window = self.windows.index(now)
            if window >= 0:
                self.sent[window] += 1
        return data

    def receive(self, data: bytes | memoryview, now: float) -> None:
        """One datagram for this party, picked up at `now`."""
        windows = self.windows
        if windows is None or len(data) < 12 or 192 <= data[1] <= 223:
            return  # before measuring, too short, or RTCP
        arrival_window = windows.index(now)
        if arrival_window >= 0:
            self.arrived[arrival_window] += 1
            if self.codec == "opus" and len(data) > 12:
                self.opus_bytes[arrival_window] += len(data) - 12
                self.opus_stereo[arrival_window] += (data[12] >> 2) & 1  # TOC "s" bit
        if self.method == "payload":
            self._match_payload(data, now)
        else:
            self._match_burst(data, now, arrival_window)

    def _match_payload(self, data: bytes | memoryview, now: float) -> None:
        assert self.windows is not None
        if len(data) != 12 + PAYLOAD_BYTES:
            sender, count, sent_at = -1, 0, now
        else:
            sender, count, sent_at = _PAYLOAD_HEADER.unpack_from(data, 12)
        window = self.windows.index(sent_at)
        if window < 0:
            return
        offset = (7 * sender + count) & 0xFF
        if (
            sender == self.index
            or sender // self.width != self.session
            or data[_BODY_START:] != _PATTERN[offset : offset + _BODY]
        ):
            self.corrupt[window] += 1
            return
        self.matched[window] += 1
        self.latencies[window].append(now - sent_at)

    def _match_burst(self, data: bytes | memoryview, now: float, arrival_window: int) -> None:
        if self.codec == "opus":
            pcm = self.decoder.decode(data[12:])
        else:
            pcm = self.decoder(data[12:])
        if not pcm:
            return
        level = int(np.abs(np.frombuffer(pcm, dtype="<i2")).max())
        if level < BURST_THRESHOLD:
            if level < QUIET_THRESHOLD:
                self.armed = True  # quiet again: the next loud frame is a new burst
            return
        if not self.armed:
            return  # still the same burst (codec ringing)
        self.armed = False
        echo = self.width == 1
        for sent_at, leg in reversed(self.recent[self.session]):
            if (leg == self.index) == echo and sent_at <= now:
                assert self.windows is not None
                window = self.windows.index(sent_at)
                if now - sent_at < MATCH_S:
                    if window >= 0:
                        self.matched[window] += 1
                        self.latencies[window].append(now - sent_at)
                elif arrival_window >= 0:
                    self.unmatched[arrival_window] += 1
                return
        if arrival_window >= 0:
            self.unmatched[arrival_window] += 1


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _window_figures(
    legs: list[_Leg],
    window: int,
    width: int,
    method: str,
    duration: float,
    cpu: float,
    lags: list[float],
) -> dict[str, Any]:
    latencies = [value for leg in legs for value in leg.latencies[window]]
    count, p50, p99 = percentiles(latencies)
    sent = sum(leg.sent[window] for leg in legs)
    if method == "payload":
        expected = sent
    else:
        expected = sum(leg.bursts[window] for leg in legs) * max(width - 1, 1)
    lag_array = np.asarray(lags or [0.0]) * 1000.0
    opus_legs = [leg for leg in legs if leg.codec == "opus"]
    opus_packets = sum(leg.arrived[window] for leg in opus_legs)
    opus_bytes = sum(leg.opus_bytes[window] for leg in opus_legs)
    return {
        "window": window,
        "sent": sent,
        "received": sum(leg.arrived[window] for leg in legs),
        "expected": expected,
        "matched": count,
        "unmatched": sum(leg.unmatched[window] for leg in legs),
        "corrupt": sum(leg.corrupt[window] for leg in legs),
        "p50": p50,
        "p99": p99,
        "generator_cpu": cpu,
        "send_lag_p99_ms": float(np.percentile(lag_array, 99)),
        "send_lag_max_ms": float(lag_array.max()),
        "send_errors": sum(leg.send_errors for leg in legs),
        "samples_ms": [value * 1000.0 for value in latencies] if count <= SAMPLES_KEPT else [],
        "opus_received_kbps": opus_bytes * 8 / 1000 / duration / len(opus_legs)
        if opus_legs
        else float("nan"),
        "opus_stereo_share": sum(leg.opus_stereo[window] for leg in opus_legs) / opus_packets
        if opus_packets
        else float("nan"),
        "by_receiver": {
            codec: percentiles(
                [v for leg in legs if leg.codec == codec for v in leg.latencies[window]]
            )
            for codec in {leg.codec for leg in legs}
        },
    }


async def _generate(
    conn: Connection,
    codecs: tuple[str, ...],
    sessions: int,
    method: str,
    duration: float,
    windows: int,
    noise: float,
) -> None:
    from callbridge.media.codecs import OPUS, create_decoder
    from callbridge.media.g711 import alaw_decode, ulaw_decode
    from webrtc_load import WebRtcLink

    loop = asyncio.get_running_loop()
    width = len(codecs)
    recent: list[deque[tuple[float, int]]] = [deque(maxlen=16) for _ in range(sessions)]
    cycles = _burst_cycles(codecs, noise) if method == "burst" else {}
    decoders = {"pcmu": ulaw_decode, "pcma": alaw_decode}
    legs: list[_Leg] = []
    for session in range(sessions):
        for position, party in enumerate(codecs):
            codec = _codec(party)
            leg = _Leg(len(legs), session, position, width, codec, method)
            leg.recent = recent
            if party == "webrtc":
                leg.link = WebRtcLink()
            if method == "burst":
                leg.cycle = cycles[(codec, position)]
                leg.decoder = create_decoder(OPUS) if codec == "opus" else decoders[codec]
            legs.append(leg)
    ports = [leg.open(loop) for leg in legs]
    conn.send(
        [
            [port, leg.link.fingerprint()] if leg.link is not None else port
            for leg, port in zip(legs, ports, strict=True)
        ]
    )
    targets = await loop.run_in_executor(None, conn.recv)
    for leg, target in zip(legs, targets, strict=True):
        _aim(leg, target)
        if leg.link is not None:
            for datagram in leg.link.start(target):
                leg.sock.sendto(datagram, leg.target)  # type: ignore[union-attr]
    await _webrtc_connected([leg for leg in legs if leg.link is not None])
    slots: list[list[_Leg]] = [[] for _ in range(SLOTS)]
    for leg in legs:
        slots[leg.slot].append(leg)
    # Activation: every party sends once, so the relay may send to it (a NAT guard).
    for leg in legs:
        leg.send_frame(-1)
    await asyncio.sleep(PAUSE_S)
    start = time.time() + 0.01
    plan = LoadWindows(start + WARMUP_S, duration, windows)
    for leg in legs:
        leg.measure(plan)
    # Events on the frame timeline: ("start"|"stop"|"report", window), in time order.
    events: list[tuple[float, str, int]] = []
    for window in range(windows):
        events += [
            (plan.start(window), "start", window),
            (plan.start(window) + duration, "stop", window),
            (plan.start(window) + duration + DRAIN_S, "report", window),
        ]
    lags: list[float] = []
    window_lags: list[float] = []
    cpu_at_start = 0.0
    cpu_share = 0.0
    frame = 0
    while events:
        frame_start = start + frame * FRAME_S
        for slot, members in enumerate(slots):
            scheduled = frame_start + slot * (FRAME_S / SLOTS)
            delay = scheduled - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            lags.append(time.time() - scheduled)
            for leg in members:
                leg.send_frame(frame)
        while events and events[0][0] <= time.time():
            _, kind, window = events.pop(0)
            if kind == "start":
                conn.send("start")
                cpu_at_start = _cpu_seconds()
                lags = []
            elif kind == "stop":
                conn.send("stop")
                cpu_share = (_cpu_seconds() - cpu_at_start) / duration
                window_lags = lags
            else:
                conn.send(
                    _window_figures(legs, window, width, method, duration, cpu_share, window_lags)
                )
        frame += 1
    for leg in legs:
        leg.close(loop)


def _aim(leg: _Leg, target: Any) -> None:
    """Set a party's target (and the payload type the relay chose) from the parent's answer."""
    if isinstance(target, dict):
        port, payload_type = target["port"], target["payload_type"]
    else:
        port, payload_type = target if isinstance(target, tuple | list) else (target, None)
    leg.target = ("127.0.0.1", int(port))
    if payload_type is not None:
        leg.payload_type = int(payload_type)


def _native_generator() -> Path | None:
    """rtp_blast.c compiled (once per source version, in the user's cache), or None (and why)."""
    if os.environ.get(GENERATOR_SWITCH, "native") == "python":
        return None
    source = _NATIVE_SOURCE.read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "callbridge-bench"
    binary = cache / f"rtp_blast-{hashlib.sha256(source).hexdigest()[:16]}"
    if binary.exists():
        return binary
    compiler = shutil.which("gcc")
    if compiler is None:
        print("gcc not found: the Python load generator runs", flush=True)
        return None
    print("compiling the native load generator", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        built = Path(scratch) / binary.name
        result = subprocess.run(
            [compiler, "-O2", "-Wall", "-Wextra", "-o", str(built), str(_NATIVE_SOURCE)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"the native load generator did not compile ({reason}): Python runs", flush=True)
            return None
        os.replace(built, binary)  # atomic: another generator may be compiling too
    return binary


def _native_configuration(
    legs: list[_Leg],
    width: int,
    duration: float,
    windows: int,
    method: str,
    cycles: dict[tuple[str, int], list[bytes]],
) -> str:
    """rtp_blast's stdin (see its header): the plan, the body pattern (payload) or the frame
    cycles (burst), one line per party."""
    codecs = sorted({leg.codec for leg in legs})
    order = list(cycles)
    lines = [
        method,
        " ".join(
            str(value)
            for value in (
                len(legs),
                width,
                windows,
                round(duration * 1e9),
                round(GAP_S * 1e9),
                round(DRAIN_S * 1e9),
                round(WARMUP_S * 1e9),
                round(PAUSE_S * 1e9),
                SLOTS,
                SAMPLES_KEPT,
            )
        ),
        " ".join([str(len(codecs)), *codecs]),
    ]
    if method == "burst":
        lines.append(f"{BURST_THRESHOLD} {QUIET_THRESHOLD} {round(MATCH_S * 1e9)} {len(order)}")
        for (_, position), frames in cycles.items():
            lines.append(" ".join([str(len(frames)), str(BURST_STAGGER * position)]))
            lines += [frame.hex() for frame in frames]
    else:
        lines.append(_PATTERN.hex())
    for leg in legs:
        assert leg.sock is not None and leg.target is not None
        cycle = order.index((leg.codec, leg.position)) if method == "burst" else -1
        lines.append(
            f"{leg.sock.fileno()} {leg.target[1]} {leg.payload_type} {codecs.index(leg.codec)}"
            f" {leg.slot} {leg.ssrc} {leg.sequence} {leg.timestamp} {leg.step} {cycle}"
        )
    return "\n".join(lines) + "\n"


def _native_figures(line: str) -> dict[str, Any]:
    """A window's figures from rtp_blast's JSON line (null is NaN, as in `_window_figures`)."""

    def number(value: float | None) -> float:
        return float("nan") if value is None else float(value)

    figures: dict[str, Any] = json.loads(line)
    for key in ("p50", "p99", "opus_received_kbps", "opus_stereo_share"):
        figures[key] = number(figures[key])
    figures["by_receiver"] = {
        codec: (int(count), number(p50), number(p99))
        for codec, (count, p50, p99) in figures["by_receiver"].items()
    }
    return figures


def _generate_native(
    conn: Connection,
    codecs: tuple[str, ...],
    sessions: int,
    method: str,
    duration: float,
    windows: int,
    noise: float,
    binary: Path,
) -> None:
    """`method` through rtp_blast: the sockets are opened here (their ports go to the parent)
    and inherited by it; its "start" / "stop" / figure lines go on to the pipe."""
    width = len(codecs)
    cycles = _burst_cycles(codecs, noise) if method == "burst" else {}
    legs = [
        _Leg(session * width + position, session, position, width, codec, method)
        for session in range(sessions)
        for position, codec in enumerate(codecs)
    ]
    try:
        conn.send([leg.bind() for leg in legs])
        for leg, target in zip(legs, conn.recv(), strict=True):
            _aim(leg, target)
        descriptors = [leg.sock.fileno() for leg in legs if leg.sock is not None]
        with subprocess.Popen(
            [str(binary)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=descriptors,
            text=True,
        ) as blast:
            assert blast.stdin is not None and blast.stdout is not None
            blast.stdin.write(_native_configuration(legs, width, duration, windows, method, cycles))
            blast.stdin.close()
            for line in blast.stdout:
                line = line.strip()
                conn.send(line if line in ("start", "stop") else _native_figures(line))
        if blast.returncode != 0:
            raise RuntimeError(f"the native load generator exited with {blast.returncode}")
    finally:
        for leg in legs:
            if leg.sock is not None:
                leg.sock.close()


async def _webrtc_connected(legs: list[_Leg], within_s: float = 30.0) -> None:
    """Wait until every webrtc party's handshake is done, resending what got lost."""
    deadline = time.monotonic() + within_s
    while any(leg.link.srtp is None for leg in legs):
        if time.monotonic() > deadline:
            down = sum(leg.link.srtp is None for leg in legs)
            raise RuntimeError(f"{down} of {len(legs)} WebRTC parties did not connect")
        await asyncio.sleep(0.2)
        for leg in legs:
            for datagram in leg.link.retry():
                leg.sock.sendto(datagram, leg.target)  # type: ignore[union-attr]


def _runs_natively(codecs: tuple[str, ...], method: str) -> bool:
    """Whether rtp_blast can play these parties: payload without webrtc parties, burst when
    every party is G.711 (it decodes G.711 only)."""
    if method == "burst":
        return all(codec in G711 for codec in codecs)
    return "webrtc" not in codecs


def generator_entry(
    conn: Connection,
    codecs: tuple[str, ...],
    sessions: int,
    method: str,
    duration: float,
    windows: int = 1,
    cpu: int | None = None,
    noise: float = 0.0,
) -> None:
    """Process entry: pin to `cpu` (if given) and generate `windows` measurement windows;
    `noise` is the RMS of the background between bursts (burst method), 0 = digital silence."""
    import uvloop

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # inherited by the native generator
    if _runs_natively(codecs, method):
        binary = _native_generator()
        if binary is not None:
            _generate_native(conn, codecs, sessions, method, duration, windows, noise, binary)
            return
    uvloop.run(_generate(conn, codecs, sessions, method, duration, windows, noise))
