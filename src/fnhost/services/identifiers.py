"""How a request names objects (by id or external id), and the one by-ids rule.

Every ``…/byids`` and ``…/delete`` of the API resolves a list of identifiers the same way:
unknown ones are reported all at once (``NotFound`` with ``missing``, each once) unless the
caller said ``ignoreUnknownIds``, and an object named twice (by id and by external id, say)
is served once, in the order first named. ``resolve_all`` is that rule, written once.
(Files, calls, sessions and schedules keep repeats, as they always have: ``dedupe=False``.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from fnhost.errors import NotFound

# The wire's spelling of an external id in ``missing``/``duplicated`` entries, which
# ``errors.NotFound`` and ``errors.Duplicated`` carry as the API sends them. Functions'
# ``missing`` use snake_case, as the live CDF API does (wire protocol, gotcha 4).
_WIRE_EXTERNAL_ID = "externalId"
_LIVE_FUNCTIONS_EXTERNAL_ID = "external_id"


@dataclass(frozen=True)
class Identifier:
    """One object named by ``id`` or, when there is none, by ``external_id``."""

    id: int | None = None
    external_id: str | None = None

    def entry(self, *, snake_case: bool = False) -> dict[str, Any]:
        """This identifier as a ``missing``/``duplicated`` entry of the wire error."""
        if self.id is not None:
            return {"id": self.id}
        key = _LIVE_FUNCTIONS_EXTERNAL_ID if snake_case else _WIRE_EXTERNAL_ID
        return {key: self.external_id}


class HasId(Protocol):
    @property
    def id(self) -> Any: ...


R = TypeVar("R", bound=HasId)
K = TypeVar("K")


def resolve_all(
    names: Sequence[K],
    rows: Sequence[R | None],
    *,
    what: str,
    ignore_unknown: bool,
    entry: Callable[[K], dict[str, Any]],
    dedupe: bool = True,
) -> list[R]:
    """The rows found for ``names`` (``rows[i]`` is what ``names[i]`` resolved to, or None):
    first every unknown one reported (``NotFound("<what> not found.")``) unless
    ``ignore_unknown``, then each object once, in the order first named. ``dedupe=False``
    keeps repeats (and reports a repeated unknown name as often as it was given)."""
    missing: list[dict[str, Any]] = []
    for n, r in zip(names, rows, strict=True):
        if r is None:
            e = entry(n)
            if not dedupe or e not in missing:
                missing.append(e)
    if missing and not ignore_unknown:
        raise NotFound(f"{what} not found.", missing=missing)
    out: list[R] = []
    seen: set[Any] = set()
    for r in rows:
        if r is None:
            continue
        if dedupe:
            if r.id in seen:
                continue
            seen.add(r.id)
        out.append(r)
    return out


def id_entry(value: int) -> dict[str, Any]:
    return {"id": value}
