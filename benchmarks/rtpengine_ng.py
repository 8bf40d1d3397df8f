"""rtpengine, the reference media relay, as a benchmark peer: the daemon and its `ng` protocol.

`ng` is bencode over UDP: a request datagram is ``<cookie> <bencoded dict>`` and the reply is
``<cookie> <bencoded dict>`` with ``"result": "ok"`` (or ``"error"`` and ``"error-reason"``).
rtpengine keeps replies by cookie, so a request repeated after a timeout gets the same answer
instead of being run twice. `NgClient` speaks it over an asyncio datagram endpoint; the bencode
codec below is ours and small (dicts, lists, byte strings, integers).

`Rtpengine` writes a config file, starts Debian's `rtpengine-daemon` (userspace forwarding,
``table = -1``: no kernel module) on loopback, pinned to given CPUs, and stops it by process id.
`ensure_installed` installs the Debian package when the binary is missing.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "NgClient",
    "NgError",
    "Rtpengine",
    "bdecode",
    "bencode",
    "ensure_installed",
    "pinned",
]

_PR_SET_PDEATHSIG = 1
BINARY = "rtpengine"
PACKAGE = "rtpengine-daemon"

# ----------------------------------------------------------------------------------- bencode


def bencode(value: Any) -> bytes:
    """Encode dicts (str/bytes keys, sorted), lists/tuples, str/bytes and ints."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans; rtpengine flags are strings in a list")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str | bytes):
        raw = value.encode() if isinstance(value, str) else value
        out.append(b"%d:%s" % (len(raw), raw))
    elif isinstance(value, list | tuple):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        keys = {
            (key.encode() if isinstance(key, str) else key): item for key, item in value.items()
        }
        for key in sorted(keys):
            _encode(key, out)
            _encode(keys[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """Decode one bencoded value; byte strings become str when they are UTF-8, else bytes."""
    value, end = _decode(data, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} trailing bytes after the bencoded value")
    return value


def _decode(data: bytes, position: int) -> tuple[Any, int]:
    if position >= len(data):
        raise ValueError("truncated bencode")
    lead = data[position : position + 1]
    if lead == b"i":
        end = data.index(b"e", position)
        return int(data[position + 1 : end]), end + 1
    if lead in (b"l", b"d"):
        items: list[Any] = []
        position += 1
        while data[position : position + 1] != b"e":
            if position >= len(data):
                raise ValueError("unterminated list or dict")
            item, position = _decode(data, position)
            items.append(item)
        if lead == b"l":
            return items, position + 1
        if len(items) % 2:
            raise ValueError("dict with a key and no value")
        return dict(zip(items[::2], items[1::2], strict=True)), position + 1
    if lead.isdigit():
        colon = data.index(b":", position)
        length = int(data[position:colon])
        raw = data[colon + 1 : colon + 1 + length]
        if len(raw) != length:
            raise ValueError("truncated byte string")
        try:
            return raw.decode(), colon + 1 + length
        except UnicodeDecodeError:
            return raw, colon + 1 + length
    raise ValueError(f"unexpected byte {lead!r} at {position}")


# ---------------------------------------------------------------------------------- ng client


class NgError(Exception):
    """rtpengine answered a request with result "error", or never answered."""


class _NgProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[bytes, asyncio.Future[dict[str, Any]]] = {}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        cookie, _, body = data.partition(b" ")
        future = self.waiting.pop(cookie, None)
        if future is None or future.done():
            return  # the answer to a request we already gave up on, or a duplicate
        try:
            future.set_result(bdecode(body))
        except ValueError as error:
            future.set_exception(NgError(f"undecodable ng reply: {error}"))


class NgClient:
    """Requests to rtpengine's ng port; many may be in flight at once."""

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _NgProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._cookies = itertools.count(1)
        self._prefix = f"{os.getpid():x}_"

    @classmethod
    async def connect(cls, host: str, port: int) -> NgClient:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            _NgProtocol, remote_addr=(host, port)
        )
        return cls(transport, protocol)

    async def request(
        self, command: str, *, timeout_s: float = 2.0, attempts: int = 3, **params: Any
    ) -> dict[str, Any]:
        """Send one command (keys as rtpengine spells them: pass `call_id` for "call-id")."""
        message = {"command": command}
        message.update({key.replace("_", "-"): value for key, value in params.items()})
        cookie = f"{self._prefix}{next(self._cookies)}".encode()
        datagram = cookie + b" " + bencode(message)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._protocol.waiting[cookie] = future
        try:
            for _ in range(attempts):
                self._transport.sendto(datagram)
                try:
                    reply = await asyncio.wait_for(asyncio.shield(future), timeout_s)
                    break
                except TimeoutError:
                    continue
            else:
                raise NgError(f"no answer to {command} after {attempts} attempts")
        finally:
            self._protocol.waiting.pop(cookie, None)
        if reply.get("result") not in ("ok", "pong"):
            reason = reply.get("error-reason") or reply.get("warning") or reply
            raise NgError(f"{command}: {reason}")
        return reply

    def close(self) -> None:
        self._transport.close()


# ------------------------------------------------------------------------------ the daemon


def pinned(cpus: set[int]) -> Callable[[], None]:
    """A `preexec_fn`: pin the child to `cpus`, and have the kernel send it SIGTERM if the
    thread that started it dies (PR_SET_PDEATHSIG), so that a killed harness leaves no relay
    behind. Start children from the thread that lives as long as they should (the main one)."""

    def setup() -> None:
        os.sched_setaffinity(0, cpus)
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass  # not Linux: the finally blocks still stop every child

    return setup


def ensure_installed() -> str:
    """Path of the rtpengine binary; installs Debian's package when it is missing."""
    found = shutil.which(BINARY)
    if found:
        return found
    print(f"rtpengine not found: installing the Debian package {PACKAGE} (apt-get)", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=environment)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", PACKAGE],
        check=True,
        env=environment,
    )
    found = shutil.which(BINARY)
    if not found:
        raise RuntimeError(f"{PACKAGE} is installed but {BINARY} is not on PATH")
    return found


def version() -> str:
    binary = ensure_installed()
    done = subprocess.run([binary, "--version"], capture_output=True, text=True)
    text = done.stdout + done.stderr
    return text.strip().removeprefix("Version:").strip() or "unknown"


class Rtpengine:
    """One rtpengine daemon on loopback, in the foreground, pinned to `cpus`. Use as a context
    manager or call `start` and `stop`; `stop` signals the process by its id, then kills it."""

    def __init__(
        self,
        ng_port: int,
        port_range: tuple[int, int],
        cpus: Iterable[int],
        threads: int,
        log_level: int = 3,
    ) -> None:
        self.ng_port = ng_port
        self.port_range = port_range
        self.cpus = set(cpus)
        self.threads = threads
        self.log_level = log_level
        self.process: subprocess.Popen[bytes] | None = None
        self._directory: tempfile.TemporaryDirectory[str] | None = None

    def config_text(self) -> str:
        """The config file we run it with (printed into the docs by the harness)."""
        return "\n".join(
            [
                "[rtpengine]",
                "interface = 127.0.0.1",
                f"listen-ng = 127.0.0.1:{self.ng_port}",
                f"port-min = {self.port_range[0]}",
                f"port-max = {self.port_range[1]}",
                "table = -1",
                "foreground = true",
                "log-stderr = true",
                f"log-level = {self.log_level}",
                f"num-threads = {self.threads}",
                "timeout = 120",
                "delete-delay = 0",
                "",
            ]
        )

    @property
    def pid(self) -> int:
        assert self.process is not None, "rtpengine is not running"
        return self.process.pid

    def start(self) -> None:
        binary = ensure_installed()
        self._directory = tempfile.TemporaryDirectory(prefix="rtpengine-bench-")
        config = Path(self._directory.name) / "rtpengine.conf"
        config.write_text(self.config_text())
        log = open(Path(self._directory.name) / "rtpengine.log", "wb")
        self.process = subprocess.Popen(
            [binary, f"--config-file={config}", "--config-section=rtpengine"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=pinned(self.cpus),
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rtpengine exited at start:\n{self.log_tail()}")
            if _udp_port_bound(self.ng_port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"rtpengine did not open its ng port:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        if self._directory is None:
            return ""
        path = Path(self._directory.name) / "rtpengine.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    def __enter__(self) -> Rtpengine:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _udp_port_bound(port: int) -> bool:
    """True once some socket listens on 127.0.0.1:`port`/udp (from /proc/net/udp)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/udp") as table:
        return any(line.split()[1] == wanted for line in itertools.islice(table, 1, None))
