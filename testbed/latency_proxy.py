"""A loopback HTTP/1.1 reverse proxy that delays every request by a fixed time and
can inject faults.

Object stores answer in tens of milliseconds; local servers in microseconds. This
proxy restores the latency so benchmarks measure what matters in the cloud (how
many round trips, how much in flight). Keep-alive connections are kept: each
client connection gets its own upstream connection, and every request on it waits
``delay`` seconds before it is forwarded.

With ``--fault-rate``, that share of requests (seeded, reproducible) meets one of
the ``--faults``: ``drop`` (the connection closes without an answer), ``503`` (Service
Unavailable with ``Retry-After``), ``429`` (Too Many Requests with ``Retry-After``: the
store throttling), ``truncate`` (half the body, then the connection closes), ``slow``
(an extra second before the answer).

    python -m testbed.latency_proxy --target 127.0.0.1:8080 --delay 0.02 --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from dataclasses import dataclass, field

_CHUNK = 1024 * 1024
FAULT_KINDS = ("drop", "503", "429", "truncate", "slow")
# Answers sent instead of forwarding the request (the connection stays usable).
_REFUSALS = {
    "503": b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n",
    "429": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
}


@dataclass
class FaultPolicy:
    """Which share of requests fail, and how (seeded, so runs are reproducible)."""

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    injected: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def draw(self) -> str | None:
        """The fault for the next request, or None."""
        if self.rate <= 0 or self._random.random() >= self.rate:
            return None
        kind = self._random.choice(self.kinds)
        self.injected[kind] = self.injected.get(kind, 0) + 1
        print(f"fault {kind}", flush=True)  # counted by LatencyProxy.injected()
        return kind


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


async def _copy_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     head: bytes) -> bool:
    """Forward a body framed by Content-Length or chunked encoding (none: nothing to
    copy); returns False when the connection broke."""
    length = _header(head, b"content-length")
    if length is not None:
        remaining = int(length)
        while remaining:
            data = await reader.read(min(remaining, _CHUNK))
            if not data:
                return False
            writer.write(data)
            remaining -= len(data)
            await writer.drain()
        return True
    if (_header(head, b"transfer-encoding") or b"").lower() == b"chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            writer.write(size_line)
            size = int(size_line.split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            writer.write(data)
            await writer.drain()
            if size == 0:
                return True
    return True  # no body


async def _serve(client_reader, client_writer, target: tuple[str, int], delay: float,
                 faults: FaultPolicy) -> None:
    upstream_reader = upstream_writer = None
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
        while True:
            request = await _read_head(client_reader)
            if request is None:
                break
            await asyncio.sleep(delay)
            fault = faults.draw()
            if fault == "drop":
                break
            if fault in _REFUSALS:
                client_writer.write(_REFUSALS[fault])
                await client_writer.drain()
                continue
            if fault == "slow":
                await asyncio.sleep(1.0)
            upstream_writer.write(request)
            if not await _copy_body(client_reader, upstream_writer, request):
                break
            await upstream_writer.drain()
            response = await _read_head(upstream_reader)
            if response is None:
                break
            client_writer.write(response)
            is_head = request.startswith(b"HEAD ")
            status = response.split(b" ", 2)[1]
            if not is_head and status not in (b"204", b"304"):
                length = _header(response, b"content-length")
                chunked = (_header(response, b"transfer-encoding") or b"").lower() == b"chunked"
                if length is None and not chunked:
                    # Body until the upstream closes: stream it, then close.
                    while data := await upstream_reader.read(_CHUNK):
                        client_writer.write(data)
                        await client_writer.drain()
                    break
                if fault == "truncate" and length is not None:
                    half = await upstream_reader.readexactly(int(length) // 2)
                    client_writer.write(half)
                    await client_writer.drain()
                    break
                if not await _copy_body(upstream_reader, client_writer, response):
                    break
            await client_writer.drain()
            if (_header(request, b"connection") or b"").lower() == b"close":
                break
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        for writer in (client_writer, upstream_writer):
            if writer is not None:
                writer.close()


async def _main(target: str, delay: float, port: int, faults: FaultPolicy) -> None:
    host, _, target_port = target.rpartition(":")
    address = (host or "127.0.0.1", int(target_port))
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, address, delay, faults), "127.0.0.1", port, backlog=4096,
        limit=1024 * 1024,
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """Run the proxy until terminated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="host:port to forward to")
    parser.add_argument("--delay", type=float, default=0.02, help="seconds per request")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any)")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of requests")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS), help="kinds to inject")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    faults = FaultPolicy(args.fault_rate, tuple(args.faults.split(",")), args.seed)
    try:
        # uvloop moves bytes several times faster: the proxy should cost the measured
        # readers as little CPU as possible on a 2-core machine.
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        run(_main(args.target, args.delay, args.port, faults))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
