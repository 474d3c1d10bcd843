"""``/functions/{id}/versions`` bodies (an fnhost extension, docs/versions.md): new code
(VersionWrite) and a rollback."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, model_validator

from fnhost.api.models.common import Id
from fnhost.api.wire import WireModel
from fnhost.services.versions import VersionSpec

# version numbers count a function's deploys
VersionNumber = Annotated[int, Field(ge=1, le=2**31 - 1)]


class VersionWrite(WireModel):
    """New code and the settings that may change with it. Anything else of the function
    (its name, secrets, schedules) belongs to the function and is refused, so a deploy
    never silently drops it."""

    model_config = ConfigDict(**{**WireModel.model_config, "extra": "forbid"})

    file_id: Id
    function_path: str | None = None
    env_vars: dict[str, str] | None = None
    cpu: float | None = None
    memory: float | None = None
    runtime: str | None = None
    index_url: str | None = None
    extra_index_urls: list[str] | None = None

    @model_validator(mode="before")
    @classmethod
    def _only_version_settings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            known = {f.alias or name for name, f in cls.model_fields.items()} | set(cls.model_fields)
            unknown = sorted(k for k in value if k not in known)
            if unknown:
                allowed = ", ".join(sorted(f.alias or n for n, f in cls.model_fields.items()))
                raise ValueError(f"A new version sets only {allowed}; not {', '.join(unknown)}.")
        return value

    def spec(self) -> VersionSpec:
        return VersionSpec(
            file_id=self.file_id,
            function_path=self.function_path,
            env_vars=self.env_vars,
            cpu=self.cpu,
            memory=self.memory,
            runtime=self.runtime,
            index_url=self.index_url,
            extra_index_urls=self.extra_index_urls,
        )


class VersionsCreate(WireModel):
    items: Annotated[list[VersionWrite], Field(min_length=1, max_length=1)]


class Rollback(WireModel):
    """``{"version": n}``, or ``{}`` for the newest kept Ready version before the current."""

    model_config = ConfigDict(**{**WireModel.model_config, "extra": "forbid"})

    version: VersionNumber | None = None
