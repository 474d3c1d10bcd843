"""``/groups`` bodies: create, and delete (bare ids, as the SDK sends them, or ``{"id"}``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator

from fnhost.api.models.common import MAX_ITEMS, Id
from fnhost.api.wire import WireModel
from fnhost.services.groups import ALL_USER_ACCOUNTS, GroupSpec


class GroupWrite(WireModel):
    """A group as ``client.iam.groups.create`` sends it. ``capabilities`` are CDF capability
    objects (``{"functionsAcl": {"actions": […], "scope": {"all": {}}}}``), checked by the
    service against the ACLs fnhost knows."""

    name: str
    capabilities: list[dict[str, Any]] | None = None
    source_id: str | None = None
    members: list[str] | str | None = None
    metadata: dict[str, str] | None = None

    @field_validator("members", mode="before")
    @classmethod
    def _members(cls, value: Any) -> Any:
        # checked before the union: pydantic's own message for one names its members' types
        if value is None or value == ALL_USER_ACCOUNTS:
            return value
        if isinstance(value, list) and all(isinstance(m, str) and m for m in value):
            return value
        raise ValueError(f"members must be a list of ids or {ALL_USER_ACCOUNTS!r}.")

    def spec(self) -> GroupSpec:
        return GroupSpec(
            name=self.name,
            capabilities=self.capabilities or [],
            source_id=self.source_id,
            members=self.members,
            metadata=self.metadata,
        )


class GroupsCreate(WireModel):
    items: Annotated[list[GroupWrite], Field(min_length=1, max_length=MAX_ITEMS)]


class GroupsDelete(WireModel):
    items: Annotated[list[Id], Field(min_length=1, max_length=MAX_ITEMS)]

    @field_validator("items", mode="before")
    @classmethod
    def _bare_ids(cls, value: Any) -> Any:
        # the SDK sends bare ids ({"items": [1, 2]}); {"id": n} objects are accepted too
        if isinstance(value, list):
            return [v.get("id") if isinstance(v, dict) else v for v in value]
        return value

    def ids(self) -> list[int]:
        return list(self.items)
