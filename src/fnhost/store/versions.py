"""Function versions: each code (and the settings that go with it) a function has had.

A version is immutable once written, except for its build state (status, error,
environment, lease) and its retirement. The function's row holds the current version's
code, settings and build (``functions.version`` is its number); ``make_current`` copies a
version into it, in the caller's transaction, so a call accepted after the commit runs the
new version and one accepted before it the old one (the call row records which).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, String, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from fnhost.store.base import Base, IdType, claim_first
from fnhost.store.calls import CallRow
from fnhost.store.functions import FunctionRow

# what a version fixes of a function, by FunctionRow's (and this table's) column names
CODE_COLUMNS = (
    "file_id", "function_path", "env_vars", "cpu", "memory", "runtime", "runtime_version", "index_url",
    "extra_index_urls",
)
# of those, what makes two deploys the same besides the code's bytes
SETTINGS_COLUMNS = tuple(c for c in CODE_COLUMNS if c not in ("file_id", "runtime_version"))


class FunctionVersionRow(Base):
    __tablename__ = "function_versions"
    __table_args__ = (
        UniqueConstraint("function_id", "number"),
        Index("ix_function_versions_status_lease", "status", "build_lease_until"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    function_id: Mapped[int] = mapped_column(ForeignKey("functions.id", ondelete="CASCADE"), index=True)
    project: Mapped[str] = mapped_column(String(64))
    number: Mapped[int]  # 1, 2, … per function
    file_id: Mapped[int]
    # sha256 of the zip's bytes (None for versions made before versions existed)
    code_sha256: Mapped[str | None] = mapped_column(String(64))
    function_path: Mapped[str] = mapped_column(String(500))
    env_vars: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    cpu: Mapped[float] = mapped_column(Float)
    memory: Mapped[float] = mapped_column(Float)
    runtime: Mapped[str] = mapped_column(String(16))
    runtime_version: Mapped[str | None] = mapped_column(String(64))
    index_url: Mapped[str | None] = mapped_column(String(2048))
    extra_index_urls: Mapped[list[Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # Queued → Deploying → Ready | Failed
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    env_hash: Mapped[str | None] = mapped_column(String(64))
    created_time: Mapped[int]
    ready_time: Mapped[int | None]
    # past the retention (``versions_kept``): its code is gone, it cannot be rolled back to
    retired_time: Mapped[int | None]
    created_by: Mapped[str | None] = mapped_column(String(128))
    build_owner: Mapped[str | None] = mapped_column(String(64))
    build_lease_until: Mapped[int | None]


def add(row: FunctionVersionRow, *, session: Session) -> FunctionVersionRow:
    session.add(row)
    session.flush()
    return row


def first_of(function: FunctionRow, code_sha256: str | None, created_by: str | None) -> FunctionVersionRow:
    """Version 1 of a function just created: its code and settings, built with it."""
    return FunctionVersionRow(
        function_id=function.id,
        project=function.project,
        number=1,
        code_sha256=code_sha256,
        status=function.status,
        created_time=function.created_time,
        created_by=created_by,
        **{c: getattr(function, c) for c in CODE_COLUMNS},
    )


def get(function_id: int, number: int, *, session: Session) -> FunctionVersionRow | None:
    return session.scalar(
        select(FunctionVersionRow).where(
            FunctionVersionRow.function_id == function_id, FunctionVersionRow.number == number
        )
    )


def get_by_id(version_id: int, *, session: Session) -> FunctionVersionRow | None:
    return session.get(FunctionVersionRow, version_id)


def of_function(function_id: int, *, session: Session) -> list[FunctionVersionRow]:
    """Every version of a function, newest first."""
    return list(
        session.scalars(
            select(FunctionVersionRow)
            .where(FunctionVersionRow.function_id == function_id)
            .order_by(FunctionVersionRow.number.desc())
        )
    )


def latest_number(function_id: int, *, session: Session) -> int:
    return session.scalar(
        select(func.max(FunctionVersionRow.number)).where(FunctionVersionRow.function_id == function_id)
    ) or 0


def function_at(function: FunctionRow, version: FunctionVersionRow) -> FunctionRow:
    """The function as it is at ``version``: its identity and secrets, that version's code,
    settings and build. A detached row, never added to a session."""
    return FunctionRow(
        id=function.id,
        project=function.project,
        external_id=function.external_id,
        name=function.name,
        description=function.description,
        owner=function.owner,
        secrets_encrypted=function.secrets_encrypted,
        secret_names=function.secret_names,
        metadata_=function.metadata_,
        created_time=function.created_time,
        last_called=function.last_called,
        status=version.status,
        error=version.error,
        env_hash=version.env_hash,
        ready_time=version.ready_time,
        version=version.number,
        **{c: getattr(version, c) for c in CODE_COLUMNS},
    )


def make_current(function: FunctionRow, version: FunctionVersionRow) -> None:
    """``version`` (Ready) becomes the function's current one (in the caller's transaction).

    The function's status is its current version's: this is not a build's move
    (``statuses.function_moves``), so a function whose first version Failed becomes Ready
    when a later version is built Ready and switched to."""
    for column in CODE_COLUMNS:
        setattr(function, column, getattr(version, column))
    function.env_hash = version.env_hash
    function.ready_time = version.ready_time
    function.status = version.status
    function.error = None
    function.version = version.number
    function.version_error = None


def record_first_build(
    function_id: int, status: str, error: dict[str, Any] | None, env_hash: str | None, ready_time: int | None,
    *, session: Session,
) -> None:
    """Version 1 is built as its function (``services/builds.py``): its outcome, on it too."""
    row = get(function_id, 1, session=session)
    if row is not None:
        row.status, row.error, row.env_hash, row.ready_time = status, error, env_hash, ready_time


def claim_next_build(owner: str, now: int, lease_ms: int, *, session: Session) -> FunctionVersionRow | None:
    """Claim one new version that waits for a build (or whose builder's lease ran out).
    Version 1 is not one of them: it is built as its function is."""
    q = (
        select(FunctionVersionRow)
        .where(
            FunctionVersionRow.number > 1,
            FunctionVersionRow.status.in_(("Queued", "Deploying")),
            (FunctionVersionRow.build_lease_until.is_(None)) | (FunctionVersionRow.build_lease_until < now),
        )
        .order_by(FunctionVersionRow.id)
    )
    return claim_first(q, owner, now, lease_ms, session=session)


def running_calls(function_id: int, number: int, *, session: Session) -> int:
    """Calls of a version that have not ended."""
    return session.scalar(
        select(func.count())
        .select_from(CallRow)
        .where(CallRow.function_id == function_id, CallRow.function_version == number, CallRow.status == "Running")
    ) or 0
