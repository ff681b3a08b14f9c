"""A real HTTP receiver on a loopback port standing for a webhook or a group robot: it records every POST
and answers with queued replies in order (then ``default``)."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ROBOT_OK = {"errcode": 0, "errmsg": "ok"}


@dataclass
class Reply:
    status: int = 200
    body: Any = field(default_factory=lambda: dict(ROBOT_OK))  # dict -> JSON, bytes as they are
    delay_s: float = 0.0
    drip_s: float = 0.0  # send the body one byte at a time, this far apart


@dataclass
class Received:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)  # when it arrived (for latency figures)

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))


class HttpServer:
    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.replies: list[Reply] = []
        self.replies_for: dict[str, list[Reply]] = {}  # by path, before the shared queue
        self.default = Reply()
        self.release = threading.Event()  # ends a delayed reply early at teardown
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                parsed = urllib.parse.urlsplit(self.path)
                server.requests.append(
                    Received(parsed.path, urllib.parse.parse_qs(parsed.query), dict(self.headers), body)
                )
                own = server.replies_for.get(parsed.path)
                reply = own.pop(0) if own else server.replies.pop(0) if server.replies else server.default
                if reply.delay_s:
                    server.release.wait(reply.delay_s)
                data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if not reply.drip_s:
                        self.wfile.write(data)
                    for i in range(len(data) if reply.drip_s else 0):
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        if server.release.wait(reply.drip_s):
                            return
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="test-http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, path: str = "/hook", query: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}" + (f"?{query}" if query else "")

    @property
    def last(self) -> Received:
        assert self.requests, "the server received no request"
        return self.requests[-1]
