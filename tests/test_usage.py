"""Usage counters from the kiosk application: a local JSON endpoint, or lines of its log."""

from __future__ import annotations

import http.server
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.roles.usage import HttpUsageConfig, LogCounter, LogUsageConfig, UsageError, read_http
from agent.sqlite import Database
from agent.state import StateStore


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[StateStore]:
    db = Database(tmp_path / "state.db")
    await db.open()
    state = StateStore(db)
    await state.prepare()
    yield state
    await db.close()


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[bytes]]]:
    bodies = [b'{"tickets": 12, "prints": 3, "queries": 40, "weird": "x", "flag": true, "neg": -1}']

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(bodies[0])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/usage", bodies
    finally:
        server.shutdown()
        thread.join()


async def test_http_counters_keep_only_non_negative_integers(endpoint: tuple[str, list[bytes]]) -> None:
    url, _ = endpoint
    assert await read_http(HttpUsageConfig(url=url)) == {"tickets": 12, "prints": 3, "queries": 40}


async def test_http_garbage_or_a_dead_endpoint_is_a_usage_error(endpoint: tuple[str, list[bytes]]) -> None:
    url, bodies = endpoint
    bodies[0] = b"<html>oops</html>"
    with pytest.raises(UsageError, match="usage endpoint"):
        await read_http(HttpUsageConfig(url=url))
    bodies[0] = b"[1, 2]"
    with pytest.raises(UsageError, match="expected a JSON object"):
        await read_http(HttpUsageConfig(url=url))
    with pytest.raises(UsageError):
        await read_http(HttpUsageConfig(url="http://127.0.0.1:9/usage", timeout_s=0.5))


async def test_log_counts_survive_a_restart_and_a_rotation(tmp_path: Path, outbox: StateStore) -> None:
    log = tmp_path / "kiosk.log"
    cfg = LogUsageConfig(path=log, patterns={"tickets": r"TICKET issued", "prints": r"PRINT done"})
    log.write_text("TICKET issued A001\nPRINT done 2p\nTICKET issued A002\nhalf a li")
    assert await LogCounter(cfg, outbox).read() == {"tickets": 2, "prints": 1}
    with log.open("a") as f:
        f.write("ne\nTICKET issued A003\n")
    assert await LogCounter(cfg, outbox).read() == {"tickets": 3, "prints": 1}, "a new counter object resumes"
    log.rename(tmp_path / "kiosk.log.1")
    log.write_text("PRINT done 1p\n")
    assert await LogCounter(cfg, outbox).read() == {"tickets": 3, "prints": 2}, "rotation starts the new file at 0"


async def test_a_poll_of_a_log_that_did_not_grow_writes_nothing(tmp_path: Path, outbox: StateStore) -> None:
    """A kiosk polls its log every few seconds and it mostly has not grown: no state write (a commit) for that."""
    log = tmp_path / "app.log"
    log.write_text("ticket A001\n")
    counter = LogCounter(LogUsageConfig(path=log, patterns={"tickets": "ticket"}), outbox)
    writes: list[str] = []
    real = outbox.kv_set

    async def counting(key: str, value: str) -> None:
        writes.append(key)
        await real(key, value)

    outbox.kv_set = counting  # type: ignore[method-assign]
    assert await counter.read() == {"tickets": 1}
    assert await counter.read() == {"tickets": 1}
    assert writes == ["usage.log"], "the second poll wrote though nothing changed"
    with log.open("a") as f:
        f.write("ticket A002\n")
    assert await counter.read() == {"tickets": 2}
    assert writes == ["usage.log", "usage.log"]


def test_a_pattern_that_is_not_a_regex_is_refused_naming_the_counter(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pattern for 'tickets'"):
        LogUsageConfig(path=tmp_path / "x.log", patterns={"tickets": "([unclosed"})
