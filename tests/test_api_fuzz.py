"""Property: no value of any path or query parameter, and no JSON body, makes the API or the dashboard answer 5xx.

Every operation of the OpenAPI schema that takes parameters, and every dashboard route (not in the schema), the
live streams included, gets values drawn around and beyond its bounds: integers near and past 2^63, days in year
1 and 9999 and impossible ones, NUL and other control characters, long and non-ASCII strings, empty values; a
dashboard parameter is drawn by the type FastAPI reads it as, like a schema one. Sent by an IT administrator (who
passes every permission check, so the values reach the code behind them) and by a site's technician, to a
configured hall with a device and an incident (so a valid id or site reaches the code behind the lookup), on
SQLite and PostgreSQL (PostgreSQL refuses NUL in text, SQLite does not). A stream answered 200 is left at once,
as a client that goes away leaves it. Every JSON body of the schema is drawn the same way, field by field (NUL in a
note was a 500 on PostgreSQL), and every dashboard form with the fields the pages post."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, get_args
from urllib.parse import quote, unquote, urlencode

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
from broker.sites import SiteConfig
from broker.store.db import Store
from broker.store.schema import devices, incidents

PASSWORD = "correct horse battery"
# Per store: about 20 s each on the shared CI machine. CI draws the same examples every run (a run must not pass or
# fail by the draw); HALLFLEET_PROPERTY_EXAMPLES raises the count and draws afresh, to look further.
EXAMPLES = int(os.environ.get("HALLFLEET_PROPERTY_EXAMPLES", "300"))
DERANDOMIZE = "HALLFLEET_PROPERTY_EXAMPLES" not in os.environ
pytestmark = pytest.mark.timeout(120 + EXAMPLES // 5)


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


def _field_kind(annotation: Any) -> str:
    """integer | number | date | string, from the type FastAPI converts a dashboard parameter to."""
    for t in (annotation, *get_args(annotation), *(a for x in get_args(annotation) for a in get_args(x))):
        if t is int:
            return "integer"
        if t is float:
            return "number"
        if t is date:
            return "date"
    return "string"


def page_operations(routes: list[Any]) -> list[Operation]:
    """The dashboard's routes, from FastAPI's own view of their parameters."""
    ops: list[Operation] = []
    for r in _api_routes(routes):
        if r.include_in_schema:
            continue
        fields = [(f, "path") for f in r.dependant.path_params] + [(f, "query") for f in r.dependant.query_params]
        params = tuple((f.name, where, _field_kind(f.field_info.annotation)) for f, where in fields)
        if params:
            ops.extend(Operation(m, r.path, params) for m in sorted(r.methods or ()))
    return ops


def routes_with_parameters(routes: list[Any]) -> set[tuple[str, str]]:
    """Every (method, path) of the app that takes a path or query parameter: what the property must reach."""
    return {
        (m, r.path)
        for r in _api_routes(routes)
        if r.dependant.path_params or r.dependant.query_params
        for m in r.methods or ()
    }


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
         "event_id": "0190a0b0-0000-7000-8000-000000000002", "token": "x.1.y", "saved": "x",
         "devices": "qp/kiosk-1"}  # fmt: skip


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
async def fuzzed(store_url: str, tmp_path: Path) -> AsyncIterator[Fuzzed]:
    secret = tmp_path / "ack-secret"
    secret.write_text("ack-links-secret-of-32-bytes-or-more")
    store = await Store.open(store_url)
    centre = ConsumerConfig(
        instance="fuzz",
        store=StoreConfig(url="sqlite+aiosqlite:///unused"),
        alerts=AlertsConfig(ack_base_url="https://hallfleet.test/ack", ack_secret_file=secret),
        sites={"qp": SiteConfig(name="青浦", go_live=date(2026, 11, 2))},
    )
    app = create_app(ApiConfig(centre=centre, cookie_secure=False), store, None)
    now = datetime.now(UTC)
    await add_user(store, "admin", PASSWORD, "it_admin", ("*",), now)
    await add_user(store, "tech.qp", PASSWORD, "technician", ("qp",), now)
    await _seed(store, now)
    ops = schema_operations(app.openapi()) + page_operations(app.routes)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hallfleet.test") as c:
        tokens = {}
        for name in ("admin", "tech.qp"):
            r = await c.post("/api/login", json={"username": name, "password": PASSWORD})
            tokens[name] = {"Authorization": f"Bearer {r.json()['token']}"}
        yield Fuzzed(app, c, ops, tokens)
    await store.close()


@dataclass(frozen=True)
class Fuzzed:
    app: Any
    client: httpx.AsyncClient
    ops: list[Operation]
    tokens: dict[str, dict[str, str]]

    async def status(self, method: str, url: str, who: str) -> tuple[int, str]:
        if url.partition("?")[0].endswith("/stream"):
            return await first_status(self.app, method, url, self.tokens[who]), ""
        r = await self.client.request(method, url, headers=self.tokens[who])
        return r.status_code, r.text[:300]


async def _seed(store: Store, now: datetime) -> None:
    """The device and the incident VALID names, so a valid id gets past its lookup to the rest of the route."""
    async with store.engine.begin() as conn:
        await conn.execute(devices.insert().values(key="qp/kiosk-1", site="qp", device="kiosk-1", role="kiosk",
                                                   presence="online", presence_since=now, first_seen=now))  # fmt: skip
        await conn.execute(
            incidents.insert().values(
                id=VALID["incident_id"], key="qp/kiosk-1", site="qp", device="kiosk-1", kind="offline",
                severity="critical", hours24=True, state="open", detected_at=now, last_signal_at=now,
            )
        )  # fmt: skip


async def first_status(app: Any, method: str, url: str, headers: dict[str, str]) -> int:
    """The status of a streamed answer; then the client goes away (httpx's ASGI transport would wait for the end of
    a stream that never ends)."""
    path, _, query = url.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": unquote(path), "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"hallfleet.test"), *((k.lower().encode(), v.encode()) for k, v in headers.items())],
        "client": ("127.0.0.1", 40000), "server": ("hallfleet.test", 80),
    }  # fmt: skip
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await started
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and not started.done():
            started.set_result(message["status"])

    await asyncio.wait_for(app(scope, receive, send), 30)
    return started.result()


async def test_the_schema_and_the_pages_are_all_covered(fuzzed: Fuzzed) -> None:
    covered = {(o.method, o.path) for o in fuzzed.ops}
    assert routes_with_parameters(fuzzed.app.routes) <= covered, "every route that takes a parameter is drawn"
    for expected in (
        ("GET", "/api/attendance/{site}/{day}"),
        ("GET", "/api/reports/attendance/{site}/{month}.xlsx"),
        ("GET", "/api/reports/queue/{site}/{month}.xlsx"),
        ("GET", "/events/stream"),
        ("GET", "/queue/stream"),
        ("POST", "/ack/{token}"),
    ):
        assert expected in covered
    kinds = {(o.path, name): kind for o in fuzzed.ops for name, _, kind in o.params}
    assert kinds["/consumables", "page"] == kinds["/", "page"] == "integer" and kinds["/attendance", "day"] == "date"


# One setting for every property here: the app and its store are a function fixture, shared by the examples.
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=DERANDOMIZE,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(data=st.data())
async def test_no_parameter_value_gets_a_5xx(fuzzed: Fuzzed, data: st.DataObject) -> None:
    method, url = data.draw(requests(fuzzed.ops))
    who = data.draw(st.sampled_from(sorted(fuzzed.tokens)))
    status, text = await fuzzed.status(method, url, who)
    assert status < 500, (method, url, who, status, text)


# -- request bodies --------------------------------------------------------------------------------------------
JUNK: list[Any] = [None, 0, -1, 2**63, 1e309, "", "\x00", [], {}, True, "x" * 5000]


def _resolve(schema: dict[str, Any], openapi: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    return _resolve(openapi["components"]["schemas"][ref.rsplit("/", 1)[1]], openapi) if ref else schema


def body_values(schema: dict[str, Any], openapi: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """A value the schema describes, at and beyond its bounds, or now and then one of another type."""
    schema = _resolve(schema, openapi)
    if "anyOf" in schema:
        return st.one_of([body_values(s, openapi, depth) for s in schema["anyOf"]])
    kind = schema.get("type")
    if "enum" in schema:
        shaped: st.SearchStrategy[Any] = st.sampled_from(schema["enum"])
    elif kind == "string":
        shaped = st.one_of(st.sampled_from(EDGE_STRINGS), st.text(max_size=80), st.just("ok " * 5 + "\t\n"))
    elif kind in ("integer", "number"):
        shaped = st.one_of(st.sampled_from(EDGE_INTS), st.integers(-(2**70), 2**70), st.floats())
    elif kind == "boolean":
        shaped = st.booleans()
    elif kind == "array":
        shaped = st.lists(body_values(schema.get("items", {}), openapi, depth + 1), max_size=4)
    elif kind == "object" and depth < 3:
        props = {k: body_values(v, openapi, depth + 1) for k, v in schema.get("properties", {}).items()}
        required = set(schema.get("required", []))
        extra = st.dictionaries(st.sampled_from(EDGE_STRINGS), st.sampled_from(JUNK), max_size=2)
        shaped = st.fixed_dictionaries(
            {k: v for k, v in props.items() if k in required},
            optional={k: v for k, v in props.items() if k not in required},
        ) | (extra if schema.get("additionalProperties") else st.nothing())
    else:
        shaped = st.sampled_from(JUNK)
    return st.one_of(shaped, shaped, shaped, st.sampled_from(JUNK))


def body_operations(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op["requestBody"]["content"]["application/json"]["schema"])
        for path, methods in openapi["paths"].items()
        for method, op in methods.items()
        if "application/json" in op.get("requestBody", {}).get("content", {})
    ]


@FUZZ
@given(data=st.data())
async def test_no_request_body_gets_a_5xx(fuzzed: Fuzzed, data: st.DataObject) -> None:
    """Every JSON body of the schema, its fields drawn at and past their bounds (NUL, 2^63, wrong types)."""
    openapi = fuzzed.app.openapi()
    method, path, schema = data.draw(st.sampled_from(body_operations(openapi)))
    path = re.sub(r"\{([^}]+)\}", lambda m: quote(valid(m.group(1), "path"), safe=""), path)
    body = data.draw(body_values(schema, openapi))
    who = data.draw(st.sampled_from(sorted(fuzzed.tokens)))
    # json.dumps, not httpx's json=: Infinity and NaN go out as Python writes them, for the server to refuse.
    headers = {**fuzzed.tokens[who], "Content-Type": "application/json"}
    r = await fuzzed.client.request(method, path, content=json.dumps(body), headers=headers)
    # The one 5xx that is an answer: a valid command while the API has no MQTT link (these tests run without one).
    no_link = r.status_code == 503 and "MQTT" in r.text
    assert r.status_code < 500 or no_link, (method, path, who, body, r.status_code, r.text[:300])


# -- the dashboard's forms -------------------------------------------------------------------------------------
# Every field a dashboard form posts (the templates' input names); a form reads the ones it knows.
FORM_FIELDS = ("state", "note", "device", "name", "reason", "text", "objective", "verdict", "username", "password",
               "role", "sites", "next", "command")  # fmt: skip


def form_routes(routes: list[Any]) -> list[str]:
    """The dashboard's POST routes (not in the schema), but /logout, which would end the fuzzing session."""
    return sorted(
        {r.path for r in _api_routes(routes) if not r.include_in_schema and "POST" in (r.methods or ())} - {"/logout"}
    )


@FUZZ
@given(data=st.data())
async def test_no_form_gets_a_5xx(fuzzed: Fuzzed, data: st.DataObject) -> None:
    """Each dashboard form, its fields drawn from the edge values (NUL, 2^63, long, empty) or left out."""
    path = data.draw(st.sampled_from(form_routes(fuzzed.app.routes)))
    path = re.sub(r"\{([^}]+)\}", lambda m: quote(valid(m.group(1), "path"), safe=""), path)
    fields = data.draw(
        st.dictionaries(st.sampled_from(FORM_FIELDS), st.one_of(values("string"), values("integer")), max_size=6)
    )
    who = data.draw(st.sampled_from(sorted(fuzzed.tokens)))
    headers = {**fuzzed.tokens[who], "Content-Type": "application/x-www-form-urlencoded"}
    r = await fuzzed.client.post(path, content=urlencode(fields), headers=headers)
    no_link = r.status_code == 503 and "MQTT" in r.text  # a valid command while the tests run without a link
    assert r.status_code < 500 or no_link, (path, who, fields, r.status_code, r.text[:300])
