"""Encryption of secrets at rest (function secrets) with a key the operator controls.

The key is a Fernet key: given in settings (``FNHOST_SECRET_KEY``) or generated into
``{home}/keys/secrets.key`` (mode 0600) on first start. Several keys may be given,
comma-separated, newest first: new values are encrypted with the first, and any of them
decrypts, which is how the key is rotated (see docs/security.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretBox:
    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    @classmethod
    def from_settings(cls, secret_key: str | None, home: Path) -> SecretBox:
        if secret_key:
            return cls([k.strip().encode() for k in secret_key.split(",") if k.strip()])
        path = home / "keys" / "secrets.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(Fernet.generate_key())
        return cls([path.read_bytes().strip()])

    def encrypt_json(self, value: Any) -> str:
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def decrypt_json(self, token: str) -> Any:
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise ValueError("secret cannot be decrypted with the configured keys") from None

    def rotate(self, token: str) -> str:
        """Re-encrypt with the first key; raises ValueError if no configured key decrypts it."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise ValueError("secret cannot be decrypted with the configured keys") from None
