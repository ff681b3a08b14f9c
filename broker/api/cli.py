"""``hallfleet api`` (uvicorn serving broker.api) and ``hallfleet user add|list|passwd|disable``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import logging
import random
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from broker.api.auth import ROLES, UserError, add_user, disable_user, list_users, parse_sites, set_password
from broker.api.config import ApiConfig, load_api_config
from broker.commands import centre_link, current_user
from broker.store.db import Store
from config.base import read_secret
from runtime.clock import SystemClock
from runtime.listen import bound_socket
from runtime.sdnotify import notify, watchdog_loop
from runtime.transport import AsyncMqtt, MqttError

log = logging.getLogger(__name__)


def add_parsers(sub: Any) -> None:
    api = sub.add_parser("api", help="run the REST API and the web dashboard (uvicorn)")
    api.add_argument("--config", type=Path, default=None, help="the API's TOML (centre_config names the consumer's)")
    api.set_defaults(func=_cmd_api)

    user = sub.add_parser("user", help="people who log in to the API and dashboard")
    usub = user.add_subparsers(dest="user_action", required=True)
    p = _user_cmd(usub, "add", "add a user: hallfleet user add wang.li --role technician --sites qingpu", _add)
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--sites", default="*", help="comma-separated site ids (default *: every site)")
    p.add_argument("--password-file", type=Path, default=None, help="read the password from here (else a prompt)")
    p = _user_cmd(usub, "passwd", "set a new password (ends the user's sessions)", _passwd)
    p.add_argument("name")
    p.add_argument("--password-file", type=Path, default=None)
    _user_cmd(usub, "disable", "stop a user logging in (ends their sessions)", _disable).add_argument("name")
    _user_cmd(usub, "list", "users, roles and sites", _list)


def _user_cmd(sub: Any, name: str, help_: str, handler: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    p.add_argument("--config", type=Path, default=None, help="the API's TOML")
    p.set_defaults(func=lambda a: _run_user(a, handler))
    return p


# -- hallfleet api -----------------------------------------------------------------------------------
class ApiStartupError(Exception):
    """An expected failure to start (the store, a credential), said in one line: no traceback unless -v."""


def _cmd_api(a: argparse.Namespace) -> int:
    cfg = load_api_config(a.config)
    try:
        asyncio.run(serve(cfg))
    except ApiStartupError as exc:
        log.debug("API start-up failed", exc_info=True)
        print(f"hallfleet api: {exc}", file=sys.stderr)
        return 1
    return 0


async def _open_store(url: str) -> Store:
    from sqlalchemy.engine import make_url

    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: say so without echoing it (it may hold a password)
        raise ApiStartupError("store.url (the consumer's TOML) is not an SQLAlchemy URL") from None
    try:
        return await asyncio.wait_for(Store.open(url), 60)
    except (Exception, TimeoutError) as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ApiStartupError(f"cannot open the store {shown}: {type(exc).__name__}: {first}") from exc


async def serve(cfg: ApiConfig) -> None:
    import uvicorn

    from broker.api.app import create_app

    class Server(uvicorn.Server):
        # uvicorn re-raises SIGTERM once it has shut down, which would kill us before the store and the MQTT
        # link are closed (and exit -15): we take the signals ourselves instead.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    # Secrets first (ack links, metrics token): a weak one is a one-line error before anything opens.
    cfg.centre_or_default.alerts.ack_secret()
    cfg.metrics_token()
    cfg.centre_or_default.mqtt.password()  # a named password file that cannot be read: one line, not a retry loop
    # The port before the store: a second copy of the API (or anything on 8080) is one line naming `port`.
    sock = bound_socket("port", cfg.listen, cfg.port)
    try:
        store = await _open_store(cfg.centre_or_default.store.url)
    except BaseException:
        sock.close()
        raise
    app = create_app(cfg, store, None)
    server = Server(
        uvicorn.Config(
            app,
            host=cfg.listen,
            port=cfg.port,
            proxy_headers=True,
            log_config=None,
            lifespan="off",
            # Live streams never end by themselves: without a bound, a stop would wait for every open page.
            timeout_graceful_shutdown=5,
        )
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    link = asyncio.create_task(keep_mqtt(app, cfg), name="api-mqtt")
    watchdog = asyncio.create_task(watchdog_loop(), name="watchdog")
    serving = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    try:
        # uvicorn sets `started` once its sockets listen and offers no event for it: poll briefly.
        while not server.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if server.started:
            notify("READY=1")
            log.info("API and dashboard on http://%s:%d (OpenAPI at /docs)", cfg.listen, cfg.port)
        await serving
    finally:
        notify("STOPPING=1")
        for task in (link, watchdog):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if app.state.mqtt is not None:
            await app.state.mqtt.disconnect()
        await store.close()


async def keep_mqtt(app: FastAPI, cfg: ApiConfig) -> None:
    """The API's own centre connection, reconnected with capped, jittered backoff. Commands issued while it is
    down get a 503 (nothing is stored), so nobody believes a command left that did not."""
    mqtt = cfg.centre_or_default.mqtt
    delay = mqtt.backoff_initial_s
    while True:
        client = AsyncMqtt(centre_link(mqtt, "api"))
        try:
            await client.connect()
        except MqttError as exc:
            log.warning("API: %s; retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, mqtt.backoff_max_s)
            continue
        app.state.mqtt = client
        delay = mqtt.backoff_initial_s
        why = await client.wait_closed()
        log.warning("API: MQTT connection lost (%s); reconnecting", why)
        app.state.mqtt = None


# -- hallfleet user ----------------------------------------------------------------------------------
def _run_user(a: argparse.Namespace, handler: Any) -> int:
    cfg = load_api_config(a.config)

    async def go() -> int:
        store = await _open_store(cfg.centre_or_default.store.url)  # a database that is down: one line
        try:
            return int(await handler(a, store))
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except ApiStartupError as exc:
        log.debug("user command failed", exc_info=True)
        print(f"hallfleet user: {exc}", file=sys.stderr)
        return 1
    except UserError as exc:
        print(f"hallfleet: {exc}", file=sys.stderr)
        return 1


def _by() -> str:
    """Who ran the command, for the audit log (the login user; as the CLI's other writes name them)."""
    return current_user()


def _password(a: argparse.Namespace) -> str:
    if a.password_file is not None:
        return read_secret(a.password_file)
    first = getpass.getpass(f"password for {a.name}: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the two passwords differ")
    return first


async def _add(a: argparse.Namespace, store: Store) -> int:
    user = await add_user(store, a.name, _password(a), a.role, parse_sites(a.sites), SystemClock().now(), by=_by())
    print(f"user {user.name} added: {user.role}, sites {','.join(user.sites)}")
    return 0


async def _passwd(a: argparse.Namespace, store: Store) -> int:
    await set_password(store, a.name, _password(a), SystemClock().now(), by=_by())
    print(f"password of {a.name} changed; their sessions are closed")
    return 0


async def _disable(a: argparse.Namespace, store: Store) -> int:
    await disable_user(store, a.name, SystemClock().now(), by=_by())
    print(f"user {a.name} disabled")
    return 0


async def _list(a: argparse.Namespace, store: Store) -> int:
    for r in await list_users(store):
        state = "disabled" if r.disabled_at else "active"
        print(f"{r.username:24} {r.role:18} {r.sites:30} {state}")
    return 0
