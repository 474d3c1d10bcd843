"""Cron expressions: parsing, the next due time, a readable description.

Standard 5 fields ``minute hour day-of-month month day-of-week`` with ``*``, lists
(``1,15``), ranges (``1-5``), steps (``*/10``, ``5-50/5``), month and weekday names
(``JAN``, ``MON-FRI``), ``7`` for Sunday and the macros ``@yearly @annually @monthly
@weekly @daily @midnight @hourly``. When both day fields are restricted, a day matches
if either does (as in Vixie cron). A 6-field form with a leading seconds field exists
for tests and benchmarks only (``allow_seconds=True``).

Times are evaluated in a time zone (UTC by default, or any IANA zone). Across daylight
saving changes the rule is Vixie cron's:

* an expression whose hour field is ``*`` (or ``*/n``) follows elapsed time: wall times
  skipped by a spring-forward gap do not fire, and wall times repeated by a fall-back
  fold fire on both passes;
* any other expression follows the wall clock: a time inside a gap fires at the moment
  of the jump, and a time repeated by a fold fires once, on the first pass.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fnhost.errors import InvalidRequest

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTHS = {m.upper(): i for i, m in enumerate(calendar.month_abbr) if m}
WEEKDAYS = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
# how far ahead a match is searched before an expression is declared never to fire
SEARCH_YEARS = 30
_DAY = timedelta(days=1)


def zone(name: str | None) -> tzinfo:
    """The time zone called ``name`` (IANA), UTC for ``None``. Raises ``InvalidRequest``."""
    if name is None or name in ("UTC", "Etc/UTC"):
        return UTC
    try:
        if not isinstance(name, str) or not name or ".." in name or name.startswith("/"):
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(
            f"Unknown time zone {name!r}: use an IANA name such as 'Europe/Oslo' or 'UTC'."
        ) from None


@dataclass(frozen=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: dict[str, int] = field(default_factory=dict)


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DOM = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, MONTHS)
_DOW = _Field("day-of-week", 0, 7, WEEKDAYS)


def _value(text: str, f: _Field, expr: str) -> int:
    key = text.upper()
    if key in f.names:
        return f.names[key]
    if not text.isdigit():
        raise InvalidRequest(f"Invalid cron expression {expr!r}: {text!r} is not a valid {f.name}.")
    v = int(text)
    if not f.lo <= v <= f.hi:
        raise InvalidRequest(
            f"Invalid cron expression {expr!r}: {f.name} {v} is outside {f.lo}-{f.hi}."
        )
    return v


def _parse_field(text: str, f: _Field, expr: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        rng, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise InvalidRequest(f"Invalid cron expression {expr!r}: bad step in {part!r}.")
            step = int(step_text)
        if rng == "*":
            lo, hi = f.lo, f.hi
        elif "-" in rng:
            a, _, b = rng.partition("-")
            lo, hi = _value(a, f, expr), _value(b, f, expr)
            if lo > hi:
                raise InvalidRequest(f"Invalid cron expression {expr!r}: range {rng!r} is reversed.")
        elif rng:
            lo = _value(rng, f, expr)
            hi = f.hi if step_text else lo
        else:
            raise InvalidRequest(f"Invalid cron expression {expr!r}: empty {f.name} field part.")
        out.update(range(lo, hi + 1, step))
    if f is _DOW and 7 in out:
        out.discard(7)
        out.add(0)
    return frozenset(out)


@dataclass(frozen=True)
class Cron:
    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    dom_any: bool
    dow_any: bool
    hour_any: bool
    has_seconds: bool

    @property
    def unit(self) -> timedelta:
        return timedelta(seconds=1) if self.has_seconds else timedelta(minutes=1)

    # -- matching in wall-clock time (naive datetimes) -----------------------------------
    def _day_ok(self, d: datetime) -> bool:
        dom = d.day in self.days
        dow = (d.weekday() + 1) % 7 in self.weekdays
        if self.dom_any or self.dow_any:
            return dom and dow
        return dom or dow

    def match_from(self, w: datetime, until: datetime | None = None) -> datetime | None:
        """The first matching wall time at or after ``w`` (naive), or None before ``until``."""
        w = w.replace(microsecond=0) if self.has_seconds else w.replace(second=0, microsecond=0)
        limit = until or w.replace(year=min(w.year + SEARCH_YEARS, 9999), month=1, day=1)
        while w < limit:
            if w.month not in self.months:
                y, m = (w.year + 1, 1) if w.month == 12 else (w.year, w.month + 1)
                w = datetime(y, m, 1)
                continue
            if not self._day_ok(w):
                w = datetime(w.year, w.month, w.day) + _DAY
                continue
            if w.hour not in self.hours:
                w = datetime(w.year, w.month, w.day, w.hour) + timedelta(hours=1)
                continue
            if w.minute not in self.minutes:
                w = datetime(w.year, w.month, w.day, w.hour, w.minute) + timedelta(minutes=1)
                continue
            if self.has_seconds and w.second not in self.seconds:
                w += timedelta(seconds=1)
                continue
            return w
        return None

    # -- due times in a time zone -----------------------------------------------------
    def next_after(self, t: datetime, tz: tzinfo = UTC) -> datetime | None:
        """The first due time strictly after ``t`` (aware), in UTC; None if it never fires."""
        t = t.astimezone(UTC)
        if tz is UTC:
            w = self.match_from(t.replace(tzinfo=None) + self._epsilon(t))
            return None if w is None else w.replace(tzinfo=UTC)
        return self._next_in_zone(t, tz)

    def _epsilon(self, t: datetime) -> timedelta:
        # the smallest step that makes the search strictly later than t
        floor = t.replace(microsecond=0) if self.has_seconds else t.replace(second=0, microsecond=0)
        return self.unit - (t - floor)

    def _next_in_zone(self, t: datetime, tz: tzinfo) -> datetime | None:
        lo = t
        off = _offset(tz, lo)
        w0 = lo.replace(tzinfo=None) + off + self._epsilon(lo + off)
        if not self.hour_any:
            # t inside the second pass of a fold: wall times of the first pass already fired
            prev = _previous_transition(tz, lo)
            if prev is not None:
                before = _offset(tz, prev - timedelta(seconds=1))
                if before > off and lo < prev + (before - off):
                    w0 = max(w0, prev.replace(tzinfo=None) + before)
        for _ in range(SEARCH_YEARS * 4):
            off = _offset(tz, lo)
            w = self.match_from(w0)
            if w is None:
                return None
            cand = (w - off).replace(tzinfo=UTC)
            trans = _first_transition(tz, lo, cand)
            if trans is None:
                return cand
            new = _offset(tz, trans)
            jump = trans.replace(tzinfo=None) + off  # the wall time at which the clock changes
            if new > off:  # spring forward: walls in [jump, jump + gap) do not exist
                if not self.hour_any:
                    gap_match = self.match_from(jump, until=jump + (new - off))
                    if gap_match is not None and trans > t:
                        return trans
                w0 = jump + (new - off)
            else:  # fall back: walls in [jump - fold, jump) come again
                w0 = jump if not self.hour_any else jump - (off - new)
            lo = trans
        return None

    def next_times(self, t: datetime, n: int, tz: tzinfo = UTC) -> list[datetime]:
        out: list[datetime] = []
        cur: datetime | None = t
        while cur is not None and len(out) < n:
            cur = self.next_after(cur, tz)
            if cur is not None:
                out.append(cur)
        return out


def _offset(tz: tzinfo, t: datetime) -> timedelta:
    return t.astimezone(tz).utcoffset() or timedelta(0)


def _bisect(tz: tzinfo, a: datetime, b: datetime) -> datetime:
    """The first second in (a, b] whose offset differs from a's (one change assumed)."""
    base = _offset(tz, a)
    while b - a > timedelta(seconds=1):
        mid = a + (b - a) / 2
        mid = mid.replace(microsecond=0)
        if mid <= a:
            break
        if _offset(tz, mid) == base:
            a = mid
        else:
            b = mid
    return b


def _first_transition(tz: tzinfo, a: datetime, b: datetime) -> datetime | None:
    """The first change of UTC offset in (a, b], sampling daily (zones change at most daily)."""
    base = _offset(tz, a)
    cur = a
    while cur < b:
        nxt = min(cur + _DAY, b)
        if _offset(tz, nxt) != base:
            return _bisect(tz, cur, nxt)
        cur = nxt
    return None


def _previous_transition(tz: tzinfo, t: datetime) -> datetime | None:
    """A change of offset within the two days before ``t``, if any (for fold detection)."""
    start = t - timedelta(days=2)
    if _offset(tz, start) == _offset(tz, t):
        return None
    return _bisect(tz, start, t)


def parse(expression: str, *, allow_seconds: bool = False) -> Cron:
    """Parse an expression; raise ``InvalidRequest`` with the reason when it is not valid."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidRequest("cronExpression is required: 5 fields, e.g. '0 0 * * *'.")
    if len(expression) > 1024:
        raise InvalidRequest("cronExpression is too long.")
    text = " ".join(expression.split())
    text = MACROS.get(text.lower(), text)
    if text.startswith("@"):
        raise InvalidRequest(
            f"Invalid cron expression {expression!r}: unknown macro. Known: {', '.join(MACROS)}."
        )
    parts = text.split(" ")
    has_seconds = len(parts) == 6 and allow_seconds
    if len(parts) != 5 and not has_seconds:
        raise InvalidRequest(
            f"Invalid cron expression {expression!r}: expected 5 fields "
            "(minute hour day-of-month month day-of-week), got "
            f"{len(parts)}."
        )
    if has_seconds:
        seconds = _parse_field(parts[0], _SECOND, expression)
        parts = parts[1:]
    else:
        seconds = frozenset({0})
    minute, hour, dom, month, dow = parts
    cron = Cron(
        expression=expression,
        seconds=seconds,
        minutes=_parse_field(minute, _MINUTE, expression),
        hours=_parse_field(hour, _HOUR, expression),
        days=_parse_field(dom, _DOM, expression),
        months=_parse_field(month, _MONTH, expression),
        weekdays=_parse_field(dow, _DOW, expression),
        dom_any=dom.startswith("*"),
        dow_any=dow.startswith("*"),
        hour_any=hour.startswith("*"),
        has_seconds=has_seconds,
    )
    if cron.match_from(datetime(2000, 1, 1)) is None:
        raise InvalidRequest(f"Invalid cron expression {expression!r}: it never fires.")
    return cron


def describe(expression: str, time_zone: str | None = None) -> str:
    """A readable description, e.g. 'Every 5 minutes' (the wire's ``when``)."""
    from cron_descriptor import ExpressionDescriptor, Options

    text = " ".join(expression.split())
    text = MACROS.get(text.lower(), text)
    options = Options()
    options.use_24hour_time_format = False
    try:
        out = str(ExpressionDescriptor(text, options).get_description())
    except Exception:  # the descriptor is stricter or looser than us on a few forms
        out = text
    return f"{out} ({time_zone})" if time_zone and time_zone not in ("UTC", "Etc/UTC") else out
