"""Operator tasks over secrets at rest: re-encrypt with the newest key, check all decrypt.

Key rotation (docs/security.md): put the new key first in ``FNHOST_SECRET_KEY`` (old keys
after it), restart, run ``fnhost admin rotate-secrets``, then drop the old keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from fnhost.auth.crypto import SecretBox
from fnhost.store.db import Database
from fnhost.store.functions import FunctionRow


@dataclass
class Report:
    total: int = 0
    failed: list[int] = field(default_factory=list)  # function ids whose secrets do not decrypt


def _sealed(session: Session) -> list[FunctionRow]:
    q = select(FunctionRow).where(FunctionRow.secrets_encrypted.is_not(None))
    return list(session.scalars(q))


def rotate(db: Database, box: SecretBox) -> Report:
    """Re-encrypt every function's secrets with the first configured key."""
    report = Report()
    with db.write() as s:
        for row in _sealed(s):
            report.total += 1
            try:
                row.secrets_encrypted = box.rotate(row.secrets_encrypted or "")
            except ValueError:
                report.failed.append(row.id)
    return report


def check(db: Database, box: SecretBox) -> Report:
    """Try to decrypt every function's secrets with the configured keys."""
    report = Report()
    with db.read() as s:
        for row in _sealed(s):
            report.total += 1
            try:
                box.decrypt_json(row.secrets_encrypted or "")
            except ValueError:
                report.failed.append(row.id)
    return report
