"""A port a process listens on, taken before anything starts: one that is already held (a second copy of the
service, another program) is a one-line ConfigError naming the config key to change, never a bind traceback.

The API, the consumer's and the agent's /metrics all listen on a port from their config; the kernel's answer
is the only reliable check, so the socket is bound here and handed to the server that serves it.
"""

from __future__ import annotations

import socket
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from config.base import ConfigError


def refused(key: str, addr: str, port: int, exc: OSError) -> ConfigError:
    why = exc.strerror or str(exc)
    return ConfigError(f"{key} = {port}: cannot listen on {addr}:{port}: {why} (is another process using it?)")


def bound_socket(key: str, addr: str, port: int) -> socket.socket:
    """A TCP socket bound to addr:port (not yet listening), ready for uvicorn's ``serve(sockets=...)``."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn binds its own: a restart must not wait for the old connections' TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((addr, port))
    except OSError as exc:
        sock.close()
        raise refused(key, addr, port, exc) from exc
    return sock


def serve_metrics(registry: CollectorRegistry, port: int, addr: str, key: str = "metrics_port") -> Any:
    """prometheus_client's own HTTP thread on addr:port; returns (server, thread)."""
    try:
        return start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise refused(key, addr, port, exc) from exc
