"""The dashboard's store banner (issue 16 item 2: an unavailable store is retried visibly, on the dashboard too).

Real parts only: `hallfleet consumer` as a subprocess on a real Mosquitto, writing its health row every
0.5 s; the API app over HTTP with a logged-in cookie; a store that really goes away: an SQLite file another
process holds under BEGIN EXCLUSIVE (the consumer's writes, its health row included, fail; the dashboard
still reads, WAL), and a private PostgreSQL cluster stopped with ``-m immediate`` (the dashboard's reads fail
too). While a device is online the banner names the consumer and since when it is silent; with the
dashboard's own read failing the page is a 503 naming the store; after recovery the banner is gone.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn

from broker.api.app import create_app
from broker.api.auth import add_user
from broker.api.config import ApiConfig
from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from broker.store.schema import consumer_health, events
from tests.support.apps import free_port
from tests.support.mqtt import publish
from tests.support.postgres import LocalPostgres
from tests.support.procs import Proc, wait_for, write_toml
from tests.test_store_errors import punch_msg, status_msg

PASSWORD = "correct horse battery"
HEALTH_S = 0.5  # the banner calls a row stale after 3 of these
BANNER = re.compile(r'<div class="store-banner"[^>]*data-kind="(\w+)">([^<]*)</div>')


def start_consumer(tmp_path: Path, port: int, url: str, procs: list[Proc]) -> Proc:
    cfg = write_toml(
        tmp_path / "consumer-banner.toml",
        {"instance": "banner"},
        {
            "mqtt": {"host": "127.0.0.1", "port": port, "backoff_initial_s": 0.1, "backoff_max_s": 1.0},
            "store": {"url": url},
            "ingest": {"sweep_s": 0.2, "health_s": HEALTH_S},
        },
    )
    proc = Proc("consumer-banner", ["consumer", "--config", str(cfg)], tmp_path).start()
    procs.append(proc)
    return proc


@asynccontextmanager
async def dashboard(url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The API app on its own store connection, and a browser-like client logged in to it."""
    store = await Store.open(url)
    await add_user(store, "it.admin", PASSWORD, "it_admin", ("qp",), datetime.now(UTC))
    app = create_app(ApiConfig(cookie_secure=False), store, None)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(uv.serve())
    await wait_for(lambda: uv.started, 10, "uvicorn to listen")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            r = await c.post("/login", data={"username": "it.admin", "password": PASSWORD, "next": "/"})
            assert r.status_code == 303 and "hallfleet_session" in c.cookies, r.text[:300]
            c.headers["accept"] = "text/html"
            yield c
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 15)
        await store.close()


async def banners(c: httpx.AsyncClient, path: str = "/") -> tuple[int, list[tuple[str, str]], str]:
    r = await c.get(path)
    return r.status_code, BANNER.findall(r.text), r.text


async def healthy_then_online(c: httpx.AsyncClient, port: int, url: str) -> None:
    """A device online and one punch stored; the consumer's row fresh: no banner on any page."""
    publish(port, [status_msg("att-1", "attendance"), punch_msg("att-1", 1)])
    store = await Store.open(url)
    try:

        async def stored() -> bool:
            n = await store.scalar(sa.select(sa.func.count()).select_from(events))
            row = await store.fetch(sa.select(consumer_health.c.state, consumer_health.c.last_commit_at))
            return int(n) == 1 and bool(row) and row[0].last_commit_at is not None

        await wait_for(stored, 60, "the punch stored and the consumer's health row written after the commit")
    finally:
        await store.close()
    for path in ("/", "/incidents"):
        code, found, text = await banners(c, path)
        assert code == 200 and found == [], (path, found, text[:500])


async def recovered(c: httpx.AsyncClient) -> None:
    async def gone() -> bool:
        code, found, _ = await banners(c)
        return code == 200 and found == []

    await wait_for(gone, 60, "the banner to go once the store is back", every=0.3)


async def test_sqlite_locked_banner_names_the_silent_consumer_and_goes_after_the_lock(
    tmp_path: Path, mosquitto: LocalMosquitto, procs: list[Proc]
) -> None:
    """GIVEN a consumer on SQLite and a device online WHEN another process holds the file under BEGIN EXCLUSIVE
    (the consumer's writes and its health row fail; the dashboard still reads) THEN every page shows the
    banner naming the consumer and since when, in Chinese and in English; once the lock is gone the banner
    goes and the punch published meanwhile is stored."""
    path = tmp_path / "store.db"
    url = f"sqlite+aiosqlite:///{path}"
    consumer = start_consumer(tmp_path, mosquitto.port, url, procs)
    await wait_for(lambda: "receiver consumer-banner connected" in consumer.log(), 60, "the consumer to subscribe")
    async with dashboard(url) as c:
        await healthy_then_online(c, mosquitto.port, url)
        holder = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            publish(mosquitto.port, [punch_msg("att-1", 2)])
            await wait_for(lambda: "store unavailable" in consumer.log(), 60, "the consumer to retry the store")

            async def shown() -> bool:
                return [k for k, _ in (await banners(c))[1]] == ["silent"]

            await wait_for(shown, 30, "the banner for a consumer that went silent", every=0.3)
            code, found, _ = await banners(c, "/incidents")
            assert code == 200 and found[0][0] == "silent"
            assert "数据入库服务 banner 自 " in found[0][1] and "未报告状态" in found[0][1], found
            assert re.search(r"\d\d-\d\d \d\d:\d\d:\d\d", found[0][1]), found  # since when, hall time
            english = (await banners(c, "/?lang=en"))[1]
            assert english[0][1].startswith("Consumer banner has not reported since "), english
        finally:
            holder.rollback()
            holder.close()
        await recovered(c)
    store = await Store.open(url)
    try:
        await wait_for(lambda: _events(store, 2), 30, "the punch published during the lock to be stored")
    finally:
        await store.close()
    assert "Traceback" not in consumer.log(), consumer.log()[-3000:]


async def _events(store: Store, n: int) -> bool:
    return int(await store.scalar(sa.select(sa.func.count()).select_from(events))) == n


@pytest.mark.postgres
async def test_postgresql_down_is_a_503_page_naming_the_store_and_the_banner_goes_after_recovery(
    tmp_path: Path, mosquitto: LocalMosquitto, procs: list[Proc]
) -> None:
    """GIVEN a consumer on PostgreSQL and a device online WHEN the cluster dies THEN a dashboard page answers 503
    with the banner saying the store is unreachable (no 500, no traceback) and the JSON API 503; once the
    cluster is back the pages answer 200 without a banner and the consumer's row is fresh again."""
    pg = LocalPostgres(tmp_path / "pg")  # private: stopping the session's cluster would break other tests
    pg.start()
    try:
        url = pg.create_database("banner")
        consumer = start_consumer(tmp_path, mosquitto.port, url, procs)
        await wait_for(lambda: "receiver consumer-banner connected" in consumer.log(), 60, "the consumer to subscribe")
        async with dashboard(url) as c:
            await healthy_then_online(c, mosquitto.port, url)
            pg.crash()
            try:
                for path in ("/", "/incidents", "/?lang=en"):
                    code, found, text = await banners(c, path)
                    assert code == 503, (path, code, text[:500])
                    assert [k for k, _ in found] == ["unreachable"], found
                    assert "Traceback" not in text and 'id="store-down"' in text
                assert "数据库无法访问" in (await banners(c, "/?lang=zh-CN"))[1][0][1]
                assert (await banners(c, "/?lang=en"))[1][0][1].startswith("The store (database) is unreachable")
                api = await c.get("/api/devices", headers={"accept": "application/json"})
                assert api.status_code == 503 and "unreachable" in api.json()["detail"], api.text[:300]
            finally:
                pg.resume()
            await recovered(c)
        assert "Traceback" not in consumer.log(), consumer.log()[-3000:]
    finally:
        for p in procs:
            p.cleanup()  # before the cluster goes: a consumer would otherwise retry a vanished server
        pg.stop()
