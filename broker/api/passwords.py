"""The password rule for people who log in: long enough, and not what everybody types.

Refused: fewer than 10 characters; fewer than 5 different characters (aaaaaaaaaa, 1212121212); a short piece
repeated (abcabcabcabc); a run up or down the alphabet or the digits (0123456789, abcdefghijk); the user's
own name inside it; and, lower-cased with digits and symbols trimmed from both ends, a password from the
bundled list of common ones (common_passwords.toml). The list is package data, so the rule works on a hall's
intranet without a download; it catches the obvious, not a targeted guess (see docs/threat-model.md).
"""

from __future__ import annotations

import itertools
import re
import tomllib
from functools import cache
from pathlib import Path

MIN_LENGTH = 10
MIN_DISTINCT = 5
COMMON = Path(__file__).with_name("common_passwords.toml")
_TRIM = re.compile(r"^[\W\d_]+|[\W\d_]+$")


class WeakPassword(ValueError):
    """The message says what is wrong, for the person choosing the password."""


@cache
def common_passwords() -> frozenset[str]:
    return frozenset(tomllib.loads(COMMON.read_text(encoding="utf-8"))["passwords"])


def check_password(password: str, name: str = "") -> None:
    """Raise WeakPassword naming the first rule ``password`` breaks."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"a password needs at least {MIN_LENGTH} characters")
    if len(set(password)) < MIN_DISTINCT:
        raise WeakPassword(f"a password needs at least {MIN_DISTINCT} different characters")
    if re.fullmatch(r"(.+?)\1+", password, re.DOTALL):
        raise WeakPassword("a password must not be a short piece repeated")
    if _is_run(password.lower()):
        raise WeakPassword("a password must not be a run of letters or digits (abcdef..., 123456...)")
    lowered = password.lower()
    if name and len(name) >= 3 and name.lower() in lowered:
        raise WeakPassword("a password must not contain the user name")
    if lowered in common_passwords() or _TRIM.sub("", lowered) in common_passwords() or _digits_only(lowered):
        raise WeakPassword("this password is on the list of common passwords: choose another")


def _is_run(text: str) -> bool:
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(text)}
    return steps <= {1} or steps <= {-1}


def _digits_only(text: str) -> bool:
    # What is left after trimming is empty for 2024123456!: digits and symbols only are a date or a phone
    # number more often than not.
    return _TRIM.sub("", text) == ""
