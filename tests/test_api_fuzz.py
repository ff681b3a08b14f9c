"""Property: no value of any path or query parameter makes the API or the dashboard answer 5xx.

Every operation of the OpenAPI schema that takes parameters, and every dashboard route (not in the schema), gets
values drawn around and beyond its bounds: integers near and past 2^63, days in year 1 and 9999 and impossible
ones, NUL and other control characters, long and non-ASCII strings, empty values. Sent by an IT administrator
(who passes every permission check, so the values reach the code behind them) and by a site's technician, on
SQLite and PostgreSQL (PostgreSQL refuses NUL in text, SQLite does not)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.alerts.routing import AlertsConfig
from broker.api.app import create_app
from broker.api.auth import add_user
from broker.api.config import ApiConfig
from broker.config import ConsumerConfig, StoreConfig
from broker.store.db import Store

pytestmark = pytest.mark.timeout(120)
PASSWORD = "correct horse battery"
EXAMPLES = 300  # per store: about 20 s each on the shared CI machine


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    params: tuple[tuple[str, str, str], ...]  # (name, "path" | "query", type: integer|number|date|string)


def _kind(schema: dict[str, Any]) -> str:
    for option in [schema, *schema.get("anyOf", [])]:
        if option.get("type") in ("integer", "number"):
            return str(option["type"])
        if option.get("format") == "date":
            return "date"
    return "string"


def schema_operations(openapi: dict[str, Any]) -> list[Operation]:
    ops = []
    for path, methods in openapi["paths"].items():
        for method, op in methods.items():
            params = tuple(
                (p["name"], p["in"], _kind(p.get("schema", {})))
                for p in op.get("parameters", [])
                if p["in"] in ("path", "query")
            )
            if params:
                ops.append(Operation(method.upper(), path, params))
    return ops


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute, also those of routers FastAPI keeps nested."""
    found = []
    for r in routes:
        if isinstance(r, APIRoute):
            found.append(r)
        elif hasattr(r, "original_router"):  # FastAPI 0.120+ includes routers lazily
            found += _api_routes(r.original_router.routes)
        elif getattr(r, "routes", None):
            found += _api_routes(r.routes)
    return found


def page_operations(routes: list[Any]) -> list[Operation]:
    """The dashboard's routes, from FastAPI's own view of their parameters."""
    ops: list[Operation] = []
    for r in _api_routes(routes):
        if r.include_in_schema or r.path == "/events/stream":
            continue
        fields = [(f.name, "path") for f in r.dependant.path_params] + [
            (f.name, "query") for f in r.dependant.query_params
        ]
        params = tuple((name, where, "date" if name == "day" else "string") for name, where in fields)
        if params:
            ops.extend(Operation(m, r.path, params) for m in sorted(r.methods or ()))
    return ops


EDGE_INTS = [0, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30]
EDGE_DAYS = ["0001-01-01", "9999-12-31", "1999-12-31", "2100-01-01", "2026-02-30", "2026-13-01", "0000-00-00",
             "+10000-01-01", "2026-1-1", "99999999-01-01"]  # fmt: skip
EDGE_STRINGS = ["", "\x00", "a\x00b", "%", "..", "../../etc/passwd", "*", "qp/", "/", "é" * 70, "x" * 5000, "nan",
                "inf", "-inf", "1e309", "🙂", "qp/kiosk-1\x00", "'; drop table users; --", "0001-01"]  # fmt: skip


def values(kind: str) -> st.SearchStrategy[str]:
    text = st.one_of(st.sampled_from(EDGE_STRINGS), st.text(max_size=80))
    if kind == "integer":
        return st.one_of(st.sampled_from(EDGE_INTS).map(str), st.integers(-(2**70), 2**70).map(str), text)
    if kind == "number":
        return st.one_of(
            st.floats(allow_nan=True, allow_infinity=True).map(repr), st.sampled_from(EDGE_INTS).map(str), text
        )
    if kind == "date":
        dates = st.dates().map(lambda d: d.isoformat())
        return st.one_of(st.sampled_from(EDGE_DAYS), dates, text)
    return text


# A value each parameter accepts, so the one drawn out of range is the one that reaches the code behind it
# (with every parameter out of range at once, the first 422 hides what the others would do).
VALID = {"site": "qp", "day": "2026-11-23", "month": "2026-11", "state": "all", "lang": "zh-CN", "window": "W1",
         "level": "3", "hours": "24", "page": "1", "size": "50", "name": "viewer", "step": "reply", "next": "/",
         "incident_id": "0190a0b0-0000-7000-8000-000000000000", "command_id": "0190a0b0-0000-7000-8000-000000000001",
         "event_id": "0190a0b0-0000-7000-8000-000000000002", "token": "x.1.y", "saved": "x"}  # fmt: skip


def valid(name: str, where: str) -> str:
    if name == "device":
        return "kiosk-1" if where == "path" else "qp/kiosk-1"
    return VALID.get(name, "1")


@st.composite
def requests(draw: st.DrawFn, ops: list[Operation]) -> tuple[str, str]:
    op = draw(st.sampled_from(ops))
    path, query = op.path, []
    target = draw(st.integers(0, len(op.params) - 1))
    for i, (name, where, kind) in enumerate(op.params):
        value = draw(values(kind)) if i == target or not draw(st.integers(0, 4)) else valid(name, where)
        if where == "path":
            path = path.replace("{" + name + "}", quote(value, safe="") or "x")
        elif i == target or draw(st.booleans()):
            query.append(f"{quote(name)}={quote(value, safe='')}")
    path = re.sub(r"\{[^}]+\}", "x", path)  # a path parameter the schema left out
    return op.method, path + ("?" + "&".join(query) if query else "")


@pytest.fixture
async def fuzzed(store_url: str, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, list[Operation], dict]]:
    secret = tmp_path / "ack-secret"
    secret.write_text("ack-links-secret-of-32-bytes-or-more")
    store = await Store.open(store_url)
    centre = ConsumerConfig(
        instance="fuzz",
        store=StoreConfig(url="sqlite+aiosqlite:///unused"),
        alerts=AlertsConfig(ack_base_url="https://hallfleet.test/ack", ack_secret_file=secret),
    )
    app = create_app(ApiConfig(centre=centre, cookie_secure=False), store, None)
    now = datetime.now(UTC)
    await add_user(store, "admin", PASSWORD, "it_admin", ("*",), now)
    await add_user(store, "tech.qp", PASSWORD, "technician", ("qp",), now)
    ops = schema_operations(app.openapi()) + page_operations(app.routes)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hallfleet.test") as c:
        tokens = {}
        for name in ("admin", "tech.qp"):
            r = await c.post("/api/login", json={"username": name, "password": PASSWORD})
            tokens[name] = {"Authorization": f"Bearer {r.json()['token']}"}
        yield c, ops, tokens
    await store.close()


async def test_the_schema_and_the_pages_are_all_covered(
    fuzzed: tuple[httpx.AsyncClient, list[Operation], dict],
) -> None:
    _, ops, _ = fuzzed
    covered = {(o.method, o.path) for o in ops}
    for expected in (
        ("GET", "/api/devices"),
        ("GET", "/api/attendance/{site}/{day}"),
        ("GET", "/api/reports/attendance/{site}/{month}.xlsx"),
        ("GET", "/attendance"),
        ("GET", "/ratings"),
        ("POST", "/ack/{token}"),
    ):
        assert expected in covered


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_no_parameter_value_gets_a_5xx(
    fuzzed: tuple[httpx.AsyncClient, list[Operation], dict], data: st.DataObject
) -> None:
    client, ops, tokens = fuzzed
    method, url = data.draw(requests(ops))
    who = data.draw(st.sampled_from(sorted(tokens)))
    r = await client.request(method, url, headers=tokens[who])
    assert r.status_code < 500, (method, url, who, r.status_code, r.text[:300])
