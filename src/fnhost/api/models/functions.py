"""``/functions`` bodies: create (FunctionWrite), list (filter), byids and delete (common)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from fnhost.api.models.common import Id, Limit, TimeRange
from fnhost.api.wire import WireModel
from fnhost.services.functions import FunctionFilter, FunctionSpec


class FunctionWrite(WireModel):
    """One function to deploy, as ``client.functions.create`` sends it."""

    name: str
    file_id: Id
    external_id: str | None = None
    description: str | None = None
    owner: str | None = None
    function_path: str | None = None
    secrets: dict[str, str] | None = None
    env_vars: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    cpu: float | None = None
    memory: float | None = None
    runtime: str | None = None
    index_url: str | None = None
    extra_index_urls: list[str] | None = None

    def spec(self) -> FunctionSpec:
        return FunctionSpec(
            name=self.name,
            file_id=self.file_id,
            external_id=self.external_id,
            description=self.description,
            owner=self.owner,
            function_path=self.function_path,
            secrets=self.secrets,
            env_vars=self.env_vars,
            metadata=self.metadata,
            cpu=self.cpu,
            memory=self.memory,
            runtime=self.runtime,
            index_url=self.index_url,
            extra_index_urls=self.extra_index_urls,
        )


class FunctionsCreate(WireModel):
    items: Annotated[list[FunctionWrite], Field(min_length=1, max_length=1)]


class FunctionFilterIn(WireModel):
    name: str | None = None
    owner: str | None = None
    file_id: Id | None = None
    status: str | None = None
    external_id_prefix: str | None = None
    created_time: TimeRange | None = None
    metadata: dict[str, str] | None = None

    def filter(self) -> FunctionFilter:
        created = self.created_time or TimeRange()
        return FunctionFilter(
            name=self.name,
            owner=self.owner,
            file_id=self.file_id,
            status=self.status,
            external_id_prefix=self.external_id_prefix,
            created_min=created.min,
            created_max=created.max,
            metadata=self.metadata,
        )


class FunctionsList(WireModel):
    filter: FunctionFilterIn | None = None
    limit: Limit | None = None
