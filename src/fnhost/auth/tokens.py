"""Access tokens of the built-in identity provider: RS256 JWTs, verified strictly."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from typing import Any

import jwt

from fnhost.auth.keys import SigningKey
from fnhost.errors import Unauthenticated

ALGORITHMS = ["RS256"]
LEEWAY_SECONDS = 5
VERIFIED_CACHE_SIZE = 4096


class TokenService:
    def __init__(self, key: SigningKey, issuer: str, audience: str) -> None:
        self.key = key
        self.issuer = issuer
        self.audience = audience
        # token -> its claims, for tokens whose signature, audience and issuer passed. A client
        # sends the same bearer token with every request until it expires; checking it again
        # decodes it three times and verifies RSA for the same answer. Expiry (and nbf) are
        # still checked on every use. Least recently used first, bounded.
        self._verified: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._verified_lock = threading.Lock()

    def issue(self, subject: str, lifetime_seconds: int, **claims: Any) -> tuple[str, int]:
        """Sign a token; returns it with its expiry (seconds since epoch)."""
        now = int(time.time())
        exp = now + lifetime_seconds
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now - 5,
            "exp": exp,
            "jti": secrets.token_hex(8),
            **claims,
        }
        token = jwt.encode(payload, self.key.private_key, algorithm="RS256", headers={"kid": self.key.kid})
        return token, exp

    def is_ours(self, unverified_issuer: str | None) -> bool:
        return unverified_issuer == self.issuer

    def verified_before(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this service has already verified, if it is still in date."""
        with self._verified_lock:
            claims = self._verified.get(token)
            if claims is None:
                return None
            now = time.time()
            if claims["exp"] + LEEWAY_SECONDS <= now or claims.get("nbf", 0) - LEEWAY_SECONDS > now:
                del self._verified[token]  # verify() gives the precise error
                return None
            self._verified.move_to_end(token)
            return claims

    def verify(self, token: str) -> dict[str, Any]:
        claims = self._verify(token)
        with self._verified_lock:
            self._verified[token] = claims
            while len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        return claims

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") not in (None, self.key.kid):
                raise Unauthenticated("The token was signed by an unknown key.")
            return jwt.decode(
                token,
                self.key.private_key.public_key(),
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("The token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("The token is not valid yet (nbf is in the future).") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("The token is for another audience.") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("The token comes from an unknown issuer.") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthenticated("The token's signing algorithm is not allowed.") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"The token is invalid: {exc}.") from None


def unverified_claims(token: str) -> dict[str, Any]:
    """Claims read without verification, only to pick the verifier (issuer routing)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise Unauthenticated("The bearer token is not a JWT.") from None
    if not isinstance(claims, dict):
        raise Unauthenticated("The bearer token is not a JWT.")
    return claims
