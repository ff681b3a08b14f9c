"""How every bench runs and reports: its async body in a fresh work dir (its log in ``bench.log``), a clear
word when it is interrupted or fails (the work dir kept for the logs), and the Markdown report printed and
written to ``bench/results/<name>-<date>.md``."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import shutil
import sys
import tempfile
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

RESULTS = Path(__file__).resolve().parent / "results"
T = TypeVar("T")


def in_workdir(name: str, about: str, keep: bool, body: Callable[[Path], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(body(workdir))``. Exits (SystemExit 130) when interrupted, (1) when the body fails;
    the body's own ``finally`` blocks stop what it started."""
    workdir = Path(tempfile.mkdtemp(prefix=f"hallfleet-bench-{name}-"))
    logging.basicConfig(
        filename=workdir / "bench.log", level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    print(f"bench.{name}: work dir {workdir}; {about}", flush=True)
    try:
        return asyncio.run(body(workdir))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: every process started here has been stopped", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception:
        traceback.print_exc()
        print(f"failed; processes stopped; logs kept in {workdir}", file=sys.stderr)
        keep = True
        raise SystemExit(1) from None
    finally:
        logging.shutdown()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def write_results(name: str, started: dt.datetime | dt.date, text: str, *, echo: bool = True) -> Path:
    """Print the report (unless the bench printed it line by line as it went: ``echo=False``) and write
    it to bench/results/<name>-<YYYY-MM-DD>.md."""
    if echo:
        print(text)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{started:%Y-%m-%d}.md"
    path.write_text(text.rstrip("\n") + "\n")
    print(f"written to {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return path
