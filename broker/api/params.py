"""Every path and query parameter the API and the dashboard take, bounded in its type.

The rule: a value outside what the store, the calendar and Python's datetime can hold is refused at the door
with a 422 that names the parameter, never carried inward to become an OverflowError or a database error
(a 500). Days lie in 2000-2099 (a hall's records do), page numbers stop where an offset still fits in 64 bits,
and ids and names keep to the characters the centre itself makes them from (no NUL, which PostgreSQL refuses).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator

SEGMENT = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
IDENT = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"  # incident, command and event ids (UUIDs), with room to spare
USER_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2099, 12, 31)
MAX_PAGE = 1_000_000  # x 500 items a page: an offset far inside 2^63


def hall_day(value: date) -> date:
    if not FIRST_DAY <= value <= LAST_DAY:
        raise ValueError(f"a day between {FIRST_DAY} and {LAST_DAY}")
    return value


Day = Annotated[date, AfterValidator(hall_day)]
Site = Annotated[str, Path(pattern=SEGMENT, description="Site id, e.g. qingpu")]
DevicePath = Annotated[str, Path(pattern=SEGMENT, description="Device id, e.g. kiosk-24h-1")]
DayPath = Annotated[Day, Path(description="The hall's day, YYYY-MM-DD (2000-2099)")]
DayQuery = Annotated[Day | None, Query(description="The hall's day, YYYY-MM-DD (2000-2099; default: today)")]
MonthPath = Annotated[str, Path(pattern=r"^20\d{2}-(0[1-9]|1[0-2])$", description="YYYY-MM (2000-2099)")]
IncidentId = Annotated[str, Path(pattern=IDENT, description="Incident id")]
CommandId = Annotated[str, Path(pattern=IDENT, description="Command id")]
EventId = Annotated[str, Path(pattern=IDENT, description="The rating's event id")]
UserName = Annotated[str, Path(pattern=USER_NAME, description="User name")]
PageNo = Annotated[int, Query(ge=1, le=MAX_PAGE, description="1-based page")]
Size = Annotated[int, Query(ge=1, le=500, description="Items per page")]
SiteQuery = Annotated[str | None, Query(pattern=SEGMENT, description="Only this site")]
DeviceQuery = Annotated[
    str | None, Query(pattern=SEGMENT[:-1] + "/" + SEGMENT[1:], description="Only rows about this SITE/DEVICE")
]
