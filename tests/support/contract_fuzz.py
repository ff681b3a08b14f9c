"""Hypothesis strategies for the wire contract, derived from the pydantic models and protocol/bounds.py.

The rule: no hand list of fields or limits. Every strategy is read off a model's annotations (ints with their
Ge/Le, strings with their lengths, patterns and Line/Prose validators, lists and dicts with their sizes,
Literals, enums, nested models, free-form Json), so a field or bound added to the contract is fuzzed the day
it is added. Each annotation gives two strategies: ``valid`` (values at the bounds and inside them) and
``beyond`` (one step past each bound, far past it, the wrong type, control characters, NaN, times no
store can hold). A model is drafted with every field valid, or with one or a few fields beyond.

Which drafted message the centre must take is not decided here: the test asks the contract
(``validate_event``), since what is under test is that the consumer holds what the contract takes.
"""

from __future__ import annotations

import enum
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import annotated_types as at
from hypothesis import strategies as st
from pydantic import AfterValidator, AwareDatetime, BaseModel
from pydantic.fields import FieldInfo

from protocol import bounds, topics
from protocol.envelope import MAX_EVENT_BYTES, Envelope, StatusMessage
from protocol.events import ACK_TYPE, HEALTH_TYPE, REGISTRY

# Placeholders resolved when a draft is published: the message's own topic segments and a fresh event id.
SITE, DEVICE, FRESH_ID = "\x00site", "\x00device", "\x00id"

# Characters the contract refuses in one-line text (Line) or in prose (Prose); tab and CR/LF only in prose.
CONTROLS = ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\x9f", "\ud800", "\udfff", "\ufffe", "\uffff"]
LINE_BREAKS = ["\t", "\n", "\r"]
# Text a hall really sends: ASCII, CJK, full-width punctuation, an emoji outside the BMP.
_ALPHABET = st.sampled_from(list("AZaz09-_. /") + list("政务服务中心好差评签到，。") + ["\U0001f600"])
_FAR_INTS = [bounds.INT64_MAX + 1, 2**64, -(2**63) - 1, 10**30, -(10**30)]
_SPECIAL_FLOATS = [float("nan"), float("inf"), float("-inf"), 1e308, -1e308]


@dataclass(frozen=True, slots=True)
class Constraints:
    """The bounds one annotation carries (pydantic's metadata, flattened)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    min_len: int = 0
    max_len: int | None = None
    pattern: str | None = None
    line: bool = False  # bounds.Line: no control character at all
    prose: bool = False  # bounds.Prose: tab and line breaks allowed
    json: bool = False  # bounds.Json: free-form


def _constraints(metadata: list[Any]) -> Constraints:
    found: dict[str, Any] = {}
    flat = [inner for m in metadata for inner in (m.metadata if isinstance(m, FieldInfo) else [m])]
    for m in flat:
        if isinstance(m, at.Ge):
            # Pydantic applies the last Ge it finds: Field(ge=1) on a Count (ge=0 inside) is lost. The strategies
            # follow what the contract does; test_ingest_property pins that one case as a known gap.
            found["ge"] = m.ge
        elif isinstance(m, at.Gt):
            found["gt"] = m.gt
        elif isinstance(m, at.Le):
            found["le"] = m.le
        elif isinstance(m, at.MinLen):
            found["min_len"] = m.min_length
        elif isinstance(m, at.MaxLen):
            found["max_len"] = m.max_length
        elif isinstance(m, AfterValidator):
            name = getattr(m.func, "__name__", "")
            found[{"_line": "line", "_prose": "prose", "_json_value": "json"}.get(name, "other")] = True
        elif hasattr(m, "pattern") or hasattr(m, "max_length"):  # StringConstraints
            for attr, key in (("pattern", "pattern"), ("max_length", "max_len"), ("min_length", "min_len")):
                if getattr(m, attr, None) is not None:
                    found[key] = getattr(m, attr)
    found.pop("other", None)
    return Constraints(**found)


def _unwrap(ann: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """Annotated[X, ...] -> (X, its metadata + what the field had)."""
    while typing.get_origin(ann) is typing.Annotated:
        args = typing.get_args(ann)
        ann, metadata = args[0], [*args[1:], *metadata]
    return ann, metadata


# -- valid: at the bounds and inside them -----------------------------------------------------------------


def valid(ann: Any, metadata: list[Any] | None = None) -> st.SearchStrategy[Any]:
    ann, metadata = _unwrap(ann, list(metadata or []))
    c = _constraints(metadata)
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        return st.one_of([valid(a, metadata if a is not type(None) else []) for a in args])
    if ann is type(None):
        return st.none()
    if origin is typing.Literal:
        return st.sampled_from(args)
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return st.sampled_from([m.value for m in ann])
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return model_valid(ann)
    if ann is bool:
        return st.booleans()
    if ann is int:
        return _ints_valid(c)
    if ann is float:
        return _floats_valid(c)
    if ann is str:
        return _text_valid(c)
    if _is_time(ann):
        return _times()
    if origin is list:
        return st.lists(valid(args[0]), min_size=c.min_len, max_size=max(c.min_len, _size(c, 6))) | _at_size(
            valid(args[0]), c, list
        )
    if origin is dict:
        keys, values = valid(args[0]), valid(args[1])
        return st.dictionaries(keys, values, min_size=c.min_len, max_size=max(c.min_len, _size(c, 6))) | _at_size(
            st.tuples(keys, values), c, dict
        )
    if c.json or ann is typing.Any:
        return json_valid()
    raise TypeError(f"no strategy for {ann!r}: teach tests/support/contract_fuzz.py the new annotation")


def _is_time(ann: Any) -> bool:
    return ann is AwareDatetime or (isinstance(ann, type) and issubclass(ann, datetime))


def _size(c: Constraints, default: int) -> int:
    return default if c.max_len is None else min(default, c.max_len)


def _at_size(element: st.SearchStrategy[Any], c: Constraints, kind: type) -> st.SearchStrategy[Any]:
    """A collection of exactly max_length entries (for a dict, distinct keys)."""
    if c.max_len is None:
        return st.nothing()
    n = c.max_len
    if kind is list:
        return st.lists(element, min_size=n, max_size=n)
    return st.lists(element, min_size=n, max_size=n, unique_by=lambda kv: kv[0]).map(dict)


def _ints_valid(c: Constraints) -> st.SearchStrategy[int]:
    lo = int(c.ge) if c.ge is not None else (int(c.gt) + 1 if c.gt is not None else -bounds.EXACT_INT_MAX)
    hi = int(c.le) if c.le is not None else bounds.EXACT_INT_MAX
    return st.sampled_from([lo, hi]) | st.integers(lo, hi)


def _floats_valid(c: Constraints) -> st.SearchStrategy[float]:
    lo = c.ge if c.ge is not None else c.gt
    edges = [x for x in (c.ge, c.le) if x is not None]
    edges += [math.nextafter(c.gt, math.inf)] if c.gt is not None else []
    edges += [] if edges else [0.0, -0.0, 1e308, -1e308]  # unbounded: any finite number
    return st.sampled_from(edges) | st.floats(
        min_value=lo, max_value=c.le, exclude_min=c.gt is not None, allow_nan=False, allow_infinity=False
    )


def _text_valid(c: Constraints) -> st.SearchStrategy[str]:
    if c.pattern:
        return st.from_regex(c.pattern, fullmatch=True).filter(lambda s: c.max_len is None or len(s) <= c.max_len)
    hi = c.max_len if c.max_len is not None else 200
    lo = max(c.min_len, 0)
    alphabet = _ALPHABET | st.sampled_from(LINE_BREAKS) if c.prose else _ALPHABET
    edge = st.sampled_from([lo, hi]).flatmap(lambda n: st.text(alphabet, min_size=n, max_size=n))
    return edge | st.text(alphabet, min_size=lo, max_size=min(hi, 40))


def _times() -> st.SearchStrategy[str]:
    """Aware ISO times every store holds: ordinary ones and the stored range's edges (bounds.TIME_MIN ..)."""
    zones = st.sampled_from(
        [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=14)), timezone(-timedelta(hours=14))]
    )
    edges = st.sampled_from([bounds.TIME_MIN, bounds.TIME_MAX - timedelta(microseconds=1)])
    ordinary = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 1, 1), timezones=zones)
    return edges.map(lambda d: d.isoformat()) | ordinary.map(lambda d: d.isoformat())


def far_times() -> st.SearchStrategy[str]:
    """A device clock far off (a Pi without a real-time clock, a year 9999): the envelope's ts takes these and
    the centre settles them (envelope.settle_clock); what else takes them is the contract's own business."""
    return st.sampled_from(
        [
            bounds.TIME_MAX.isoformat(),
            "1969-12-31T23:59:59+00:00",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00",
            "1900-01-01T00:00:00Z",
        ]
    )


def json_valid(depth: int = 0) -> st.SearchStrategy[Any]:
    leaves = (
        st.none()
        | st.booleans()
        | st.sampled_from([bounds.EXACT_INT_MAX, -bounds.EXACT_INT_MAX])
        | st.integers(-bounds.EXACT_INT_MAX, bounds.EXACT_INT_MAX)
        | st.floats(allow_nan=False, allow_infinity=False)
        | _text_valid(Constraints(prose=True, max_len=60))
    )
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(_text_valid(Constraints(max_len=20)), inner, max_size=3)
        ),
        max_leaves=8,
    )


def model_valid(model: type[BaseModel], skip: frozenset[str] = frozenset()) -> st.SearchStrategy[dict[str, Any]]:
    """A JSON object the model takes: every required field, each optional one present or left out."""
    required = {
        n: valid(f.annotation, list(f.metadata))
        for n, f in model.model_fields.items()
        if f.is_required() and n not in skip
    }
    optional = {
        n: valid(f.annotation, list(f.metadata))
        for n, f in model.model_fields.items()
        if not f.is_required() and n not in skip
    }
    return st.fixed_dictionaries(required, optional=optional)


# -- beyond: one step past each bound, far past it, the wrong type ------------------------------------------


def beyond(ann: Any, metadata: list[Any] | None = None) -> st.SearchStrategy[Any]:
    ann, metadata = _unwrap(ann, list(metadata or []))
    c = _constraints(metadata)
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    wrong_type = st.sampled_from([[], {}, "", "x", 1.5])  # not "1", true or null: lax parsing or an Optional takes them
    if origin in (typing.Union, types.UnionType):
        return st.one_of([beyond(a, metadata) for a in args if a is not type(None)])
    if origin is typing.Literal or (isinstance(ann, type) and issubclass(ann, enum.Enum)):
        return st.sampled_from(["bogus", "", 0])
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return model_beyond(ann) | wrong_type
    if ann is bool:
        return st.sampled_from(["maybe", 2])
    if ann is int:
        return _ints_beyond(c) | wrong_type
    if ann is float:
        return _floats_beyond(c) | st.just("x")
    if ann is str:
        return _text_beyond(c) | st.sampled_from([123, ["a"]])
    if _is_time(ann):
        naive = ["2026-01-01T08:00:00"] if ann is AwareDatetime else []  # a plain datetime may be naive
        return st.sampled_from([*naive, "2026-13-01T00:00:00Z", "yesterday", "", 1e20])
    if origin is list:
        return _collection_beyond(c, valid(args[0]), beyond(args[0]), list) | st.just("not a list")
    if origin is dict:
        kv = st.tuples(valid(args[0]), valid(args[1]))
        bad = st.tuples(valid(args[0]), beyond(args[1])) | st.tuples(
            beyond(args[0]).filter(lambda k: isinstance(k, str)), valid(args[1])
        )
        return _collection_beyond(c, kv, bad, dict) | st.just(["not", "an", "object"])
    if c.json or ann is typing.Any:
        return json_beyond()
    raise TypeError(f"no strategy for {ann!r}: teach tests/support/contract_fuzz.py the new annotation")


def _ints_beyond(c: Constraints) -> st.SearchStrategy[int]:
    edges = [int(c.ge) - 1] if c.ge is not None else []
    edges += [int(c.gt)] if c.gt is not None else []
    edges += [int(c.le) + 1] if c.le is not None else [bounds.EXACT_INT_MAX + 1]
    return st.sampled_from(edges + _FAR_INTS)


def _floats_beyond(c: Constraints) -> st.SearchStrategy[float]:
    edges = [c.ge - 1e-9] if c.ge is not None else []
    edges += [c.gt] if c.gt is not None else []
    edges += [c.le + 1e-9, c.le * 10 + 1] if c.le is not None else []
    return st.sampled_from(edges + _SPECIAL_FLOATS)


def _text_beyond(c: Constraints) -> st.SearchStrategy[str]:
    base = _text_valid(c)
    out = [
        st.tuples(base, st.sampled_from(CONTROLS + ([] if c.prose else LINE_BREAKS)), st.integers(0, 64)).map(
            lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]
        )
    ]
    if c.max_len is not None:
        out.append(st.sampled_from(["x", "政"]).map(lambda ch: ch * (c.max_len + 1)))  # type: ignore[operator]
    if c.min_len > 0:
        out.append(st.just(""))
    if c.pattern:
        out.append(st.sampled_from(["-starts-with-dash", "UPPER.Case", "has space", "a" * 65, "ａ全角"]))
    return st.one_of(out)


def _collection_beyond(
    c: Constraints, element: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], kind: type
) -> st.SearchStrategy[Any]:
    def build(entries: list[Any]) -> Any:
        return entries if kind is list else dict(entries)  # the bad entry is last: it wins a key it shares

    unique_by: Callable[[Any], Any] | None = None if kind is list else (lambda kv: kv[0])
    out = [st.lists(element, max_size=3).flatmap(lambda xs: bad.map(lambda b: build([*xs, b])))]
    if c.min_len > 0:
        out.append(st.lists(element, min_size=c.min_len - 1, max_size=c.min_len - 1, unique_by=unique_by).map(build))
    if c.max_len is not None:
        n = c.max_len + 1
        out.append(st.lists(element, min_size=n, max_size=n, unique_by=unique_by).map(build))
    return st.one_of(out)


def json_beyond() -> st.SearchStrategy[Any]:
    def nest(depth: int) -> Any:
        value: Any = 1
        for _ in range(depth):
            value = {"k": value}
        return value

    return st.one_of(
        st.sampled_from([bounds.EXACT_INT_MAX + 1, 2**64, float("nan"), float("inf")]),
        st.integers(bounds.JSON_DEPTH_MAX + 1, bounds.JSON_DEPTH_MAX + 4).map(nest),
        st.sampled_from(CONTROLS).map(lambda ch: {"text": f"a{ch}b"}),
        st.sampled_from(CONTROLS).map(lambda ch: {f"key{ch}": 1}),
    )


def model_beyond(model: type[BaseModel], skip: frozenset[str] = frozenset()) -> st.SearchStrategy[dict[str, Any]]:
    """A valid object with one or two fields past their bounds, a required field missing, or an unknown field."""
    names = [n for n in model.model_fields if n not in skip]
    required = [n for n in names if model.model_fields[n].is_required()]

    def spoil(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        one = st.sampled_from(names).flatmap(
            lambda n: beyond(model.model_fields[n].annotation, list(model.model_fields[n].metadata)).map(
                lambda v: {**base, n: v}
            )
        )
        options = [one, one.flatmap(lambda b: spoil_once(b)), st.just({**base, "unknown_field": 1})]
        if required:
            options.append(st.sampled_from(required).map(lambda n: {k: v for k, v in base.items() if k != n}))
        return st.one_of(options)

    def spoil_once(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        return st.sampled_from(names).flatmap(
            lambda n: beyond(model.model_fields[n].annotation, list(model.model_fields[n].metadata)).map(
                lambda v: {**base, n: v}
            )
        )

    return model_valid(model, skip).flatmap(spoil)


# -- whole messages -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Draft:
    """A message to publish: its kind ("status" or an event type), the JSON document (with SITE, DEVICE and
    FRESH_ID placeholders) and how it is put on the wire."""

    kind: str
    doc: Any
    ascii_only: bool = True
    spoil: tuple[str, int] | None = None  # ("truncate", at) or ("pad", to_bytes): bytes broken after encoding

    def render(self, site: str, device: str, fresh_id: str) -> tuple[str, bytes]:
        doc = self.doc
        if isinstance(doc, dict):
            swap = {SITE: site, DEVICE: device, FRESH_ID: fresh_id}
            doc = {k: swap.get(v, v) if isinstance(v, str) else v for k, v in doc.items()}
        text = json.dumps(doc, allow_nan=True, ensure_ascii=self.ascii_only)
        raw = text.encode("utf-8", "surrogatepass")  # a lone surrogate raw on the wire: not UTF-8 at all
        if self.spoil is not None:
            how, n = self.spoil
            raw = raw[: n % max(len(raw), 1)] if how == "truncate" else raw + b" " * max(0, n - len(raw))
        return self.topic(site, device), raw

    def topic(self, site: str, device: str) -> str:
        if self.kind == "status":
            return topics.status(site, device)
        if self.kind == HEALTH_TYPE:
            return topics.health(site, device)
        if self.kind == ACK_TYPE:
            return topics.cmd_ack(site, device)
        return topics.event(site, device, self.kind)


# The envelope's own fields: id, site and device are the message's own (placeholders) unless spoiled.
_ENVELOPE_SKIP = frozenset({"id", "site", "device", "type", "data"})
UNREGISTERED = "kiosk.not_in_the_registry"


def _envelope(kind: str, data: st.SearchStrategy[Any], spoil_envelope: bool) -> st.SearchStrategy[dict[str, Any]]:
    fields = model_beyond(Envelope, _ENVELOPE_SKIP) if spoil_envelope else model_valid(Envelope, _ENVELOPE_SKIP)
    own = {"id": FRESH_ID, "site": SITE, "device": DEVICE, "type": kind}
    far_clock = st.tuples(fields, data, far_times()).map(lambda f: {**f[0], "ts": f[2], **own, "data": f[1]})
    return (
        st.tuples(fields, data).map(lambda fd: {**fd[0], **own, "data": fd[1]})
        | (far_clock if not spoil_envelope else st.nothing())
        | (
            st.tuples(
                fields,
                data,
                st.sampled_from(["id", "site", "device", "type"]),
                beyond(str, Envelope.model_fields["site"].metadata),
            ).map(lambda t: {**t[0], **own, "data": t[1], t[2]: t[3]})
            if spoil_envelope
            else st.nothing()
        )
    )


def valid_drafts(kind: str) -> st.SearchStrategy[Draft]:
    """Drafts the contract takes, every value at or inside its bound (all of them at once may pass the envelope's
    byte limit: the sum of the bounds is larger than MAX_EVENT_BYTES, so those are refused as oversized)."""
    if kind == "status":
        return st.builds(Draft, st.just(kind), model_valid(StatusMessage), st.booleans())
    return st.builds(Draft, st.just(kind), _envelope(kind, model_valid(REGISTRY[kind].model), False), st.booleans())


def refused_drafts(kind: str) -> st.SearchStrategy[Draft]:
    """Drafts the contract refuses: a payload or envelope field beyond its bound, a field missing or unknown."""
    if kind == "status":
        return st.builds(Draft, st.just(kind), model_beyond(StatusMessage), st.booleans())
    model = REGISTRY[kind].model
    docs = _envelope(kind, model_beyond(model), False) | _envelope(kind, model_valid(model), True)
    return st.builds(Draft, st.just(kind), docs, st.booleans())


def drafts(kind: str) -> st.SearchStrategy[Draft]:
    """One kind's drafts as they reach the centre: valid or refused, some cut short or padded on the wire."""
    return st.tuples(valid_drafts(kind) | refused_drafts(kind), _wire_spoil()).map(
        lambda dw: Draft(dw[0].kind, dw[0].doc, dw[0].ascii_only, dw[1])
    )


def _wire_spoil() -> st.SearchStrategy[tuple[str, int] | None]:
    """Mostly intact; sometimes cut short, or padded past MAX_EVENT_BYTES with JSON whitespace (still valid JSON)."""
    return (
        st.none()
        | st.none()
        | st.none()
        | st.tuples(st.just("truncate"), st.integers(0, 400))
        | st.tuples(st.just("pad"), st.sampled_from([MAX_EVENT_BYTES, MAX_EVENT_BYTES + 1]))
    )


def any_draft() -> st.SearchStrategy[Draft]:
    """Every registered event type, an unregistered one, and status messages."""
    unregistered = st.builds(
        Draft,
        st.just(UNREGISTERED),
        _envelope(UNREGISTERED, st.just({}), spoil_envelope=False),
        st.booleans(),
        st.none(),
    )
    return st.one_of([drafts(kind) for kind in KINDS] + [unregistered])


KINDS = (*sorted(REGISTRY), "status")
"""What any_draft covers besides an unregistered type: every registered event type, and status messages."""
