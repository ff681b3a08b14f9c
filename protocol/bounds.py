"""The bounds of the wire contract: what every value must fit so that the store and the reports can hold it.

The rule: a value the centre would refuse is refused where it is made (the agent's payload models raise at
the call site) and again where it arrives (the consumer dead-letters it), never by the database half-way
through a batch. Integers fit the store's columns, floats are finite, text has no control characters
(PostgreSQL refuses NUL, XLSX reports refuse most of C0), times lie in a range every backend and report
can represent. A device whose clock is outside that range is not refused: see ``settle_clock``.
``docs/contract.md`` is generated from these bounds and the payload models (``python -m protocol.contract``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field

INT64_MAX = 2**63 - 1
"""BIGINT columns (seq, session): the largest value both SQLite and PostgreSQL hold."""
INT32_MAX = 2**31 - 1
"""INTEGER columns (config and gallery versions)."""
EXACT_INT_MAX = 2**53 - 1
"""Counters and readings: exact in JSON as every reader parses it (a browser's numbers are doubles)."""
TIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
"""Earliest time stored as the device said: a Pi without a real-time clock starts at the epoch."""
TIME_MAX = datetime(2100, 1, 1, tzinfo=UTC)
"""Latest time stored as the device said (exclusive)."""
JSON_DEPTH_MAX = 8
"""Nesting of free-form JSON (a command's result)."""

# C0 and C1 controls, DEL, lone surrogates (cannot be encoded as UTF-8) and the two XML non-characters.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
# Prose may break lines and tab: XLSX and every database take those.
_CONTROL_IN_PROSE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _line(value: str) -> str:
    bad = _CONTROL.search(value)
    if bad:
        raise ValueError(f"control character U+{ord(bad.group()):04X} at {bad.start()}: names and ids are one line")
    return value


def _prose(value: str) -> str:
    bad = _CONTROL_IN_PROSE.search(value)
    if bad:
        raise ValueError(f"control character U+{ord(bad.group()):04X} at {bad.start()}: text may hold only \\t \\n \\r")
    return value


def _json_value(value: Any, depth: int = 0) -> Any:
    if depth > JSON_DEPTH_MAX:
        raise ValueError(f"nested deeper than {JSON_DEPTH_MAX}")
    if isinstance(value, str):
        _prose(value)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if abs(value) > EXACT_INT_MAX:
            raise ValueError(f"integer {value} is beyond ±{EXACT_INT_MAX}")
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("not a finite number")
    elif isinstance(value, dict):
        for k, v in value.items():
            _line(str(k))
            _json_value(v, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            _json_value(v, depth + 1)
    return value


Line = Annotated[str, AfterValidator(_line)]
"""One line: an id, a name, a code. No control characters at all."""
Prose = Annotated[str, AfterValidator(_prose)]
"""Free text (a detail, a reason): tab and line breaks allowed, other control characters not."""
Int64 = Annotated[int, Field(ge=0, le=INT64_MAX)]
"""A sequence number or session counter."""
Int32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
"""A version."""
Count = Annotated[int, Field(ge=0, le=EXACT_INT_MAX)]
"""A count or cumulative counter."""
Ordinal = Annotated[int, Field(ge=1, le=EXACT_INT_MAX)]
"""A 1-based number (an attempt, a round). A Field(ge=1) beside a Count would not narrow it: the Annotated
type's own ge=0 is what pydantic applies."""
Reading = Annotated[int, Field(ge=-EXACT_INT_MAX, le=EXACT_INT_MAX)]
"""A raw sensor or driver reading (may be negative)."""
Json = Annotated[Any, AfterValidator(_json_value)]
"""Free-form JSON: exact integers, finite numbers, text without control characters, nested at most 8 deep."""


def storable_time(value: datetime) -> bool:
    """Aware and inside TIME_MIN .. TIME_MAX once in UTC (a far year plus an offset cannot even be moved there)."""
    if value.tzinfo is None or value.utcoffset() is None:
        return False
    try:
        return TIME_MIN <= value.astimezone(UTC) < TIME_MAX
    except OverflowError:
        return False


def printable(text: str) -> str:
    """Text made storable anywhere (a dead letter's detail, a log line): controls shown as escapes."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape", "backslashreplace").decode("ascii"), text)
