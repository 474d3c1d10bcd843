"""``/functions/schedules`` bodies: create, list (filter), update (fnhost extension)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, model_validator
from pydantic.alias_generators import to_camel

from fnhost.api.models.common import MAX_ITEMS, Id, Limit, TimeRange
from fnhost.api.wire import WireModel
from fnhost.services.schedules import UPDATABLE, ScheduleChange, ScheduleFilter, ScheduleSpec


class ScheduleWrite(WireModel):
    """One schedule, as ``client.functions.schedules.create`` sends it."""

    name: str
    cron_expression: str
    function_id: Id | None = None
    function_external_id: str | None = None
    description: str | None = None
    data: dict[str, Any] | None = None
    nonce: str | None = None
    # extensions
    time_zone: str | None = None
    paused: bool = False

    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(
            name=self.name,
            cron_expression=self.cron_expression,
            nonce=self.nonce,
            function_id=self.function_id,
            function_external_id=self.function_external_id,
            description=self.description,
            data=self.data,
            time_zone=self.time_zone,
            paused=self.paused,
        )


class SchedulesCreate(WireModel):
    items: Annotated[list[ScheduleWrite], Field(min_length=1, max_length=1)]


class ScheduleFilterIn(WireModel):
    name: str | None = None
    function_id: Id | None = None
    function_external_id: str | None = None
    cron_expression: str | None = None
    created_time: TimeRange | None = None

    def filter(self) -> ScheduleFilter:
        created = self.created_time or TimeRange()
        return ScheduleFilter(
            name=self.name,
            function_id=self.function_id,
            function_external_id=self.function_external_id,
            cron_expression=self.cron_expression,
            created_min=created.min,
            created_max=created.max,
        )


class SchedulesList(WireModel):
    filter: ScheduleFilterIn | None = None
    limit: Limit | None = None


def _one_op(value: Any) -> Any:
    if not isinstance(value, dict) or ("set" not in value and value.get("setNull") is not True):
        raise ValueError("must be {'set': value} or {'setNull': true}.")
    return value


class _Set(WireModel):
    set_null: bool = False

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, value: Any) -> Any:
        return _one_op(value)


class SetText(_Set):
    set: str | None = None


class SetData(_Set):
    set: dict[str, Any] | None = None


class SetFlag(_Set):
    set: bool | None = None


UPDATABLE_WIRE = tuple(to_camel(f) for f in UPDATABLE)


class ScheduleUpdateOps(WireModel):
    name: SetText | None = None
    description: SetText | None = None
    cron_expression: SetText | None = None
    data: SetData | None = None
    paused: SetFlag | None = None
    time_zone: SetText | None = None

    @model_validator(mode="before")
    @classmethod
    def _known(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if not value:
                raise ValueError("update must name at least one field.")
            unknown = sorted(k for k in value if k not in UPDATABLE_WIRE)
            if unknown:
                raise ValueError(
                    f"Schedule field(s) {unknown} cannot be updated. "
                    f"Updatable: {', '.join(UPDATABLE_WIRE)}."
                )
        return value


class ScheduleUpdate(WireModel):
    id: Id
    update: ScheduleUpdateOps

    def change(self) -> ScheduleChange:
        given = {name: op for name in UPDATABLE if (op := getattr(self.update, name)) is not None}
        values = {name: None if op.set_null else op.set for name, op in given.items()}
        return ScheduleChange(id=self.id, fields=frozenset(given), **values)


class SchedulesUpdate(WireModel):
    items: Annotated[list[ScheduleUpdate], Field(min_length=1, max_length=MAX_ITEMS)]
