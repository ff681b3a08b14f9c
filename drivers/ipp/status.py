"""What an A4 printer's Get-Printer-Attributes answer means for a kiosk: state, reasons, supplies,
paper, counters. Pure functions over decoded attributes; no I/O.

Supply levels follow the Printer MIB (RFC 3805) as carried by PWG 5100.13 ``printer-supply``:
-1 other, -2 unknown and -3 "some remaining" are states, never numbers, so they never become a
percentage. Waste receptacles (``class=receptacleThatIsFilled``) count up: full is the problem,
and their states are ``almost-full`` / ``full`` rather than ``low`` / ``empty``, so a full waste
box is never reported as an empty (harmless-looking) one (OpenPrinting/cups #1462).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from drivers.ipp.codec import Attribute, Collection, TextWithLanguage

PrinterState = Literal["idle", "processing", "stopped", "unknown"]
Severity = Literal["report", "warning", "error"]
SupplyState = Literal["ok", "low", "empty", "almost-full", "full", "unknown"]

OTHER, UNKNOWN, SOME_REMAINING = -1, -2, -3

#: What get_status asks for; printers leave out what they do not have.
REQUESTED = (
    "printer-state",
    "printer-state-reasons",
    "printer-state-message",
    "printer-is-accepting-jobs",
    "printer-make-and-model",
    "printer-supply",
    "printer-supply-description",
    "marker-names",
    "marker-types",
    "marker-colors",
    "marker-levels",
    "marker-low-levels",
    "marker-high-levels",
    "media-ready",
    "printer-input-tray",
    "printer-impressions-completed",
    "printer-impressions-completed-col",
    "printer-media-sheets-completed",
)

#: Reasons that stop the kiosk printing (RFC 8011 5.4.12, PWG 5100.9).
FAULT_REASONS = frozenset(
    {
        "media-empty", "media-jam", "media-needed", "toner-empty", "marker-supply-empty", "marker-waste-full",
        "door-open", "cover-open", "interlock-open", "input-tray-missing", "output-tray-missing",
        "output-area-full", "offline", "shutdown", "paused", "spool-area-full", "fuser-over-temp",
        "fuser-under-temp", "developer-empty", "opc-life-over", "marker-failure", "media-path-failure",
    }
)  # fmt: skip
#: Reasons that announce a fault to come: worth a visit on the next round, not an alarm.
WARNING_REASONS = frozenset(
    {
        "toner-low", "marker-supply-low", "media-low", "marker-waste-almost-full", "developer-low",
        "opc-near-eol", "output-area-almost-full", "moving-to-paused",
    }
)  # fmt: skip

_STATES: dict[int, PrinterState] = {3: "idle", 4: "processing", 5: "stopped"}
_SEVERITIES: tuple[Severity, ...] = ("report", "warning", "error")
_KINDS = {
    "toner": "toner", "tonercartridge": "toner",
    "ink": "ink", "inkcartridge": "ink", "inkribbon": "ink", "inkbottle": "ink",
    "wastetoner": "waste", "wasteink": "waste", "wastewax": "waste", "wastewater": "waste", "wastepaper": "waste",
    "opc": "drum", "drum": "drum", "photoconductor": "drum", "developer": "developer",
    "fuser": "fuser", "fuseroil": "fuser", "fuseroilwick": "fuser", "fusercleaningpad": "fuser",
    "transferunit": "transfer", "transferroller": "transfer", "transferbelt": "transfer",
    "staples": "staples", "ribbonwax": "ribbon", "cleanerunit": "cleaner",
}  # fmt: skip
_HEX_COLORS = {"#000000": "black", "#00ffff": "cyan", "#ff00ff": "magenta", "#ffff00": "yellow"}


@dataclass(frozen=True, slots=True)
class Thresholds:
    low_pct: float = 10.0  # ippeveprinter raises toner-low below 10 %; CUPS's SNMP backend at 5 %
    almost_full_pct: float = 90.0  # ippeveprinter raises marker-waste-almost-full above 90 %


@dataclass(frozen=True, slots=True)
class Supply:
    """One consumable or waste receptacle.

    ``level_pct`` is None whenever the printer gave a sentinel (-1 other, -2 unknown, -3 some
    remaining) or a level without a capacity to relate it to; ``raw_level`` keeps what it sent.
    For a receptacle ``level_pct`` is how full it is (it counts up).
    """

    name: str
    kind: str  # toner, ink, waste, drum, developer, fuser, transfer, staples, ribbon, cleaner, other
    color: str | None
    level_pct: float | None
    raw_level: int
    max_capacity: int
    state: SupplyState
    receptacle: bool = False
    type: str = ""  # as the printer named it: tonerCartridge, wasteToner, toner, waste-toner...


@dataclass(frozen=True, slots=True)
class Tray:
    """A paper input tray from ``printer-input-tray`` (sheets, or a sentinel)."""

    name: str
    raw_level: int
    max_capacity: int
    level_pct: float | None
    state: SupplyState


@dataclass(frozen=True, slots=True)
class Media:
    ready: tuple[str, ...] = ()  # media-ready: sizes loaded now, e.g. iso_a4_210x297mm
    trays: tuple[Tray, ...] = ()
    reasons: tuple[str, ...] = ()  # media-* state reasons (media-empty, media-low, media-jam...)

    def has(self, size: str) -> bool:
        return size in self.ready


@dataclass(frozen=True, slots=True)
class Counters:
    """Lifetime counters; None when the printer does not keep them (ippeveprinter keeps none)."""

    pages: int | None = None  # printer-impressions-completed
    monochrome: int | None = None  # printer-impressions-completed-col.monochrome
    color: int | None = None  # printer-impressions-completed-col.full-color (+ highlight-color)
    sheets: int | None = None  # printer-media-sheets-completed


@dataclass(frozen=True)
class A4Status:
    """One reading of the printer. ``reachable=False`` carries the reason in ``error``."""

    reachable: bool
    state: PrinterState = "unknown"
    state_reasons: tuple[str, ...] = ()  # severity suffixes stripped; "none" dropped
    severity: Mapping[str, Severity] = field(default_factory=dict)
    message: str = ""  # printer-state-message
    accepting_jobs: bool | None = None
    model: str | None = None
    supplies: tuple[Supply, ...] = ()
    media: Media = field(default_factory=Media)
    counters: Counters = field(default_factory=Counters)
    error: str | None = None

    @classmethod
    def unreachable(cls, error: str) -> A4Status:
        return cls(reachable=False, error=error)

    @property
    def faults(self) -> tuple[str, ...]:
        """Codes of what stops printing now: fault reasons, empty or full supplies, a stopped printer
        with no reason given, or "unreachable".

        By reason name, whatever its severity suffix: severity follows the printer's state, not the
        condition (ippeveprinter sends media-empty-report while idle, -error once stopped), and an
        idle kiosk printer with no paper fails the next citizen who prints.
        """
        if not self.reachable:
            return ("unreachable",)
        codes = [r for r in self.state_reasons if r in FAULT_REASONS]
        for s in self.supplies:
            if s.state == "full":
                codes.append("marker-waste-full")
            elif s.state == "empty":
                codes.append("toner-empty" if s.kind == "toner" else "marker-supply-empty")
        if self.state == "stopped" and not codes:
            codes.append("stopped")
        return tuple(dict.fromkeys(codes))

    @property
    def warnings(self) -> tuple[str, ...]:
        """Codes of what will stop printing soon: low toner or paper, waste almost full."""
        if not self.reachable:
            return ()
        codes = [r for r in self.state_reasons if r in WARNING_REASONS]
        for s in self.supplies:
            if s.state == "almost-full":
                codes.append("marker-waste-almost-full")
            elif s.state == "low":
                codes.append("toner-low" if s.kind == "toner" else "marker-supply-low")
        faults = self.faults
        return tuple(c for c in dict.fromkeys(codes) if c not in faults)


def parse_status(attrs: Mapping[str, Attribute], thresholds: Thresholds | None = None) -> A4Status:
    """Printer attributes (the printer group of a response) -> A4Status. Never raises."""
    th = thresholds or Thresholds()
    reasons, severity = split_reasons(_strings(attrs.get("printer-state-reasons")))
    supplies = parse_printer_supply(
        _strings(attrs.get("printer-supply")), _strings(attrs.get("printer-supply-description")), th
    )
    if not supplies:
        supplies = parse_markers(attrs, th)
    state_value = _first_int(attrs.get("printer-state"))
    accepting_attr = attrs.get("printer-is-accepting-jobs")
    accepting = accepting_attr.value if accepting_attr else None
    return A4Status(
        reachable=True,
        state=_STATES.get(state_value if state_value is not None else 0, "unknown"),
        state_reasons=reasons,
        severity=severity,
        message=next(iter(_strings(attrs.get("printer-state-message"))), ""),
        accepting_jobs=accepting if isinstance(accepting, bool) else None,
        model=next(iter(_strings(attrs.get("printer-make-and-model"))), None),
        supplies=supplies,
        media=Media(
            ready=_strings(attrs.get("media-ready")),
            trays=parse_trays(_strings(attrs.get("printer-input-tray")), th),
            reasons=tuple(r for r in reasons if r.startswith("media-")),
        ),
        counters=parse_counters(attrs),
    )


def split_reasons(values: tuple[str, ...]) -> tuple[tuple[str, ...], dict[str, Severity]]:
    """Strip -report/-warning/-error into a severity map; unsuffixed means error (RFC 8011 5.4.12).
    The map is information only: see A4Status.faults for why it decides nothing."""
    reasons: dict[str, Severity] = {}
    for value in values:
        reason, severity = value, cast(Severity, "error")
        for s in _SEVERITIES:
            if value.endswith("-" + s) and len(value) > len(s) + 1:
                reason, severity = value[: -len(s) - 1], s
                break
        if reason and reason != "none":
            # The same reason twice with two severities: keep the graver one.
            old = reasons.get(reason)
            if old is None or _SEVERITIES.index(severity) > _SEVERITIES.index(old):
                reasons[reason] = severity
    return tuple(reasons), reasons


def parse_supply_entry(text: str) -> dict[str, str]:
    """``type=toner;maxcapacity=100;level=45;...;`` -> {"type": "toner", ...}; junk parts are skipped."""
    out: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            out[key.strip().lower()] = value.strip()
    return out


def parse_printer_supply(
    entries: tuple[str, ...], descriptions: tuple[str, ...] = (), thresholds: Thresholds | None = None
) -> tuple[Supply, ...]:
    th = thresholds or Thresholds()
    supplies = []
    for i, text in enumerate(entries):
        kv = parse_supply_entry(text)
        if not kv:
            continue
        raw_type = kv.get("type", "")
        kind = supply_kind(raw_type)
        supply_class = kv.get("class", "")
        receptacle = supply_class == "receptacleThatIsFilled" or (not supply_class and kind == "waste")
        color = _color(kv.get("colorantname"))
        level, capacity = _int(kv.get("level")), _int(kv.get("maxcapacity"))
        pct = level_pct(level, capacity, percent_unit=kv.get("unit", "").lower() == "percent")
        name = descriptions[i] if i < len(descriptions) and descriptions[i] else _default_name(kind, color, raw_type)
        state = receptacle_state(level, pct, th) if receptacle else consumable_state(level, pct, th)
        supplies.append(Supply(name, kind, color, pct, level, capacity, state, receptacle, raw_type))
    return tuple(supplies)


def parse_markers(attrs: Mapping[str, Attribute], thresholds: Thresholds | None = None) -> tuple[Supply, ...]:
    """CUPS-style marker-* attributes (levels in percent), for printers without printer-supply."""
    th = thresholds or Thresholds()
    levels = _ints(attrs.get("marker-levels"))
    names, types = _strings(attrs.get("marker-names")), _strings(attrs.get("marker-types"))
    colors = _strings(attrs.get("marker-colors"))
    lows, highs = _ints(attrs.get("marker-low-levels")), _ints(attrs.get("marker-high-levels"))
    supplies = []
    for i, level in enumerate(levels):
        raw_type = types[i] if i < len(types) else ""
        kind = supply_kind(raw_type)
        color = _color(colors[i] if i < len(colors) else None)
        pct = level_pct(level, 100, percent_unit=True)
        # The printer's own marker-low-levels / marker-high-levels beat our defaults when given.
        if kind == "waste":
            high = highs[i] if i < len(highs) and 0 < highs[i] <= 100 else th.almost_full_pct
            state = receptacle_state(level, pct, Thresholds(th.low_pct, high))
        else:
            low = lows[i] if i < len(lows) and 0 <= lows[i] <= 100 else th.low_pct
            state = consumable_state(level, pct, Thresholds(low, th.almost_full_pct))
        name = names[i] if i < len(names) and names[i] else _default_name(kind, color, raw_type)
        supplies.append(Supply(name, kind, color, pct, level, 100, state, kind == "waste", raw_type))
    return tuple(supplies)


def parse_trays(entries: tuple[str, ...], thresholds: Thresholds | None = None) -> tuple[Tray, ...]:
    th = thresholds or Thresholds()
    trays = []
    for i, text in enumerate(entries):
        kv = parse_supply_entry(text)
        if not kv:
            continue
        level, capacity = _int(kv.get("level")), _int(kv.get("maxcapacity"))
        pct = level_pct(level, capacity, percent_unit=False)
        trays.append(Tray(kv.get("name") or f"tray-{i + 1}", level, capacity, pct, consumable_state(level, pct, th)))
    return tuple(trays)


def parse_counters(attrs: Mapping[str, Attribute]) -> Counters:
    pages = _first_int(attrs.get("printer-impressions-completed"))
    sheets = _first_int(attrs.get("printer-media-sheets-completed"))
    mono = color = None
    col_attr = attrs.get("printer-impressions-completed-col")
    col = col_attr.value if col_attr else None
    if isinstance(col, Collection):
        mono = _first_int(col.get("monochrome"))
        full, highlight = _first_int(col.get("full-color")), _first_int(col.get("highlight-color"))
        color = None if full is None and highlight is None else (full or 0) + (highlight or 0)
        if pages is None and (mono is not None or color is not None):
            pages = (mono or 0) + (color or 0)
    return Counters(pages=pages, monochrome=mono, color=color, sheets=sheets)


def supply_kind(raw_type: str) -> str:
    return _KINDS.get(raw_type.replace("-", "").replace("_", "").lower(), "other")


def level_pct(level: int, capacity: int, *, percent_unit: bool) -> float | None:
    """Percentage for a real level; None for a sentinel or a level with no known capacity."""
    if level < 0:
        return None
    if capacity > 0:
        return round(min(100.0, 100.0 * level / capacity), 1)
    if percent_unit:  # maxcapacity -2 (unknown) with unit=percent: the level is the percentage
        return float(min(level, 100))
    return None


def consumable_state(level: int, pct: float | None, th: Thresholds) -> SupplyState:
    if level == SOME_REMAINING:
        return "ok"
    if level < 0:
        return "unknown"
    if level == 0:
        return "empty"
    if pct is None:
        return "unknown"
    return "low" if pct <= th.low_pct else "ok"


def receptacle_state(level: int, pct: float | None, th: Thresholds) -> SupplyState:
    if level == SOME_REMAINING:  # "some remaining" capacity: room is left
        return "ok"
    if pct is None:
        return "unknown"
    if pct >= 100:
        return "full"
    return "almost-full" if pct >= th.almost_full_pct else "ok"


def _default_name(kind: str, color: str | None, raw_type: str) -> str:
    return f"{color} {kind}" if color else (raw_type or kind)


def _color(value: str | None) -> str | None:
    if not value or value.lower() in ("unknown", "none", "other"):
        return None
    return _HEX_COLORS.get(value.lower(), value)


def _strings(attr: Attribute | None) -> tuple[str, ...]:
    if attr is None:
        return ()
    out = []
    for v in attr.values:
        if isinstance(v, bytes):
            out.append(v.decode("utf-8", errors="replace"))
        elif isinstance(v, str):
            out.append(v)
        elif isinstance(v, TextWithLanguage):
            out.append(v.text)
    return tuple(out)


def _ints(attr: Attribute | None) -> tuple[int, ...]:
    if attr is None:
        return ()
    return tuple(v for v in attr.values if isinstance(v, int) and not isinstance(v, bool))


def _first_int(attr: Attribute | None) -> int | None:
    return next(iter(_ints(attr)), None)


def _int(value: str | None) -> int:
    try:
        return int(value) if value is not None else UNKNOWN
    except ValueError:
        return UNKNOWN
