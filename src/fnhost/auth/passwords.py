"""Client secrets are stored only as scrypt hashes and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

_N, _R, _P = 2**14, 8, 1

# Verifying against this hash when the client is unknown makes "no such client" cost the
# same as "wrong secret", so response timing does not reveal which client ids exist.
_DUMMY_SALT = bytes(16)


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str | None) -> bool:
    if stored is None:
        hashlib.scrypt(secret.encode(), salt=_DUMMY_SALT, n=_N, r=_R, p=_P, dklen=32)
        return False
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt_hex), n=_N, r=_R, p=_P, dklen=32)
    return hmac.compare_digest(digest.hex(), digest_hex)


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def sha256_hex(value: str) -> str:
    """For high-entropy random values (nonces): a fast hash is enough, and lookup by it works."""
    return hashlib.sha256(value.encode()).hexdigest()
