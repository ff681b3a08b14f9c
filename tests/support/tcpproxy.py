"""A TCP proxy on a free loopback port, put between agents and the broker to break the network on
purpose: the chaos suite's hall WAN.

Runs on the test's asyncio loop. Controls, each effective at once:

- ``cut()``: reset every connection and refuse new ones (the cable pulled, the router rebooting).
- ``heal()``: forward normally again (delay, bandwidth limit and refusal are lifted).
- ``delay(s)``: add ``s`` seconds of latency to every chunk, both ways (pipelined, not a throttle).
- ``blackhole()``: keep every socket open but never deliver another byte on the connections that
  exist, and accept new ones into the same void. Nobody is told: a half-open link that only the MQTT
  keepalive can detect. Those connections stay dead after ``heal()``, as a lost NAT entry does; the
  endpoints close them when their keepalive gives up.
- ``limit(bytes_per_s)``: a bandwidth ceiling per direction and connection (``None`` lifts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CHUNK = 65_536


@dataclass(eq=False)
class _Conn:
    """One client connection and its upstream twin."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    dead: bool = False  # blackholed: bytes are read and thrown away, forever
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for w in (self.client, self.upstream):
            if w is not None:
                w.transport.abort()


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.host = host
        self.port = 0
        self.refusing = False
        self.blackholing = False
        self.latency_s = 0.0
        self.bytes_per_s: float | None = None
        self.accepted = 0
        self.refused = 0
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._abort_all()
        tasks = [t for c in self._conns for t in c.tasks]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._conns.clear()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- controls ----------------------------------------------------------------------------------
    def cut(self) -> None:
        self.refusing = True
        self._abort_all()

    def heal(self) -> None:
        self.refusing = False
        self.blackholing = False
        self.latency_s = 0.0
        self.bytes_per_s = None

    def delay(self, seconds: float) -> None:
        self.latency_s = seconds

    def blackhole(self) -> None:
        self.blackholing = True
        for c in self._conns:
            c.dead = True

    def limit(self, bytes_per_s: float | None) -> None:
        self.bytes_per_s = bytes_per_s

    @property
    def connections(self) -> int:
        """Connections that still forward bytes."""
        return sum(1 for c in self._conns if not c.dead)

    # -- forwarding --------------------------------------------------------------------------------
    def _abort_all(self) -> None:
        for c in list(self._conns):
            c.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.refused += 1
            writer.transport.abort()  # RST: the client sees "connection reset"
            return
        self.accepted += 1
        conn = _Conn(writer, dead=self.blackholing)
        self._conns.add(conn)
        try:
            if conn.dead:
                await self._swallow(reader)
                return
            try:
                up_reader, conn.upstream = await asyncio.open_connection(*self.upstream)
            except OSError as exc:
                log.info("proxy: upstream %s:%d refused: %s", *self.upstream, exc)
                return
            conn.tasks = [
                asyncio.create_task(self._pump(conn, reader, conn.upstream)),
                asyncio.create_task(self._pump(conn, up_reader, writer)),
            ]
            await asyncio.wait(conn.tasks, return_when=asyncio.FIRST_COMPLETED)
            if not conn.dead:  # a live link passes the close on; a dead one waits for both ends to give up
                conn.abort()
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            conn.abort()
            self._conns.discard(conn)

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(CHUNK):
                pass

    async def _pump(self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read chunks and hand them to a sender that delivers each at its due time."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send(conn, queue, writer))
        try:
            with contextlib.suppress(OSError):
                while chunk := await reader.read(CHUNK):
                    if not conn.dead:
                        queue.put_nowait((loop.time() + self.latency_s, chunk))
            if conn.dead:  # the endpoint gave up on the dead link; the other side never hears of it
                return
            queue.put_nowait(None)
            await sender
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _send(
        self, conn: _Conn, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError):
            while (item := await queue.get()) is not None:
                due, chunk = item
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if self.bytes_per_s:  # the chunk's time on the wire
                    await asyncio.sleep(len(chunk) / self.bytes_per_s)
                if conn.dead:
                    continue
                writer.write(chunk)
                await writer.drain()
