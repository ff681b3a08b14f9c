"""drivers/http1.py's client (what the queue driver polls a queue PC with) against raw answers written on a real
socket: a queue PC's web server may answer by Content-Length, in chunks or until it closes, and a bad or endless
answer is an error that says what was wrong, never a hang or an unbounded read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from drivers.http1 import FetchError, fetch

Serve = Callable[[bytes], Awaitable[str]]


@pytest.fixture
async def server() -> AsyncIterator[Serve]:
    """serve(raw answer) -> a URL whose server reads one request and writes that answer, then closes."""
    servers: list[asyncio.Server] = []

    async def start(answer: bytes) -> str:
        async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            writer.close()

        srv = await asyncio.start_server(one, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/api/records?after=3&limit=2"

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


CASES = [
    ("content-length", b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}", 200, b'{"a":1}'),
    ("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n", 200,
     b'{"a":1}'),
    ("until close", b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n[]", 200, b"[]"),
    ("100 continue first", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno", 404,
     b"no"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "answer", "status", "body"), CASES, ids=[c[0] for c in CASES])
async def test_an_answer_is_read_by_length_chunks_or_close(
    server: Serve, name: str, answer: bytes, status: int, body: bytes
) -> None:
    url = await server(answer)
    assert await fetch(url, max_body=100, timeout_s=5) == (status, body)


BAD = [
    ("too long by length", b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n" + b"x" * 101, "at most 100 bytes"),
    ("too long until close", b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 101, "longer than 100 bytes"),
    ("too long in chunks", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n" + b"x" * 101, "longer than"),
    ("cut short", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}", "after 2 of 10 body bytes"),
    ("not HTTP", b"SSH-2.0-OpenSSH_9.2\r\n", "not an HTTP answer"),
    ("no answer", b"", "closed mid-answer"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "answer", "error"), BAD, ids=[c[0] for c in BAD])
async def test_a_bad_or_endless_answer_is_an_error_saying_what(
    server: Serve, name: str, answer: bytes, error: str
) -> None:
    url = await server(answer)
    with pytest.raises(FetchError, match=error):
        await fetch(url, max_body=100, timeout_s=5)


async def test_a_refused_connection_is_an_os_error() -> None:
    with pytest.raises(OSError):
        await fetch("http://127.0.0.1:9/records", max_body=100, timeout_s=5)


async def test_a_server_that_never_answers_is_a_timeout_after_timeout_s() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # holds the connection, answers nothing

    srv = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await fetch(f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/records", max_body=100, timeout_s=0.3)
        assert loop.time() - t0 < 2
    finally:
        srv.close()
