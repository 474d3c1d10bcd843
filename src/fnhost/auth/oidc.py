"""Bearer tokens of external OpenID Connect issuers (Entra ID, Keycloak, Auth0, …).

The operator lists the issuers (``FNHOST_OIDC_ISSUERS``). A token is routed to its issuer
by its unverified ``iss`` claim and then verified strictly against that issuer alone:
signature with a key from the issuer's JWKS, ``exp``, ``nbf``, ``iss``, ``aud``, and the
algorithm against an allow-list that holds only asymmetric algorithms (never ``none``,
never an HMAC algorithm, which would let a public key act as a shared secret).

Keys are fetched with httpx and cached for ``oidc_jwks_cache_seconds``. A token naming a
key id the cache does not hold triggers one refetch (the issuer rotated its keys), at
most once per ``oidc_jwks_min_refetch_seconds`` per issuer, so a flood of made-up key ids
cannot turn the server into a load generator against the issuer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from fnhost.auth.capabilities import Principal
from fnhost.errors import Unauthenticated, Unavailable
from fnhost.settings import OidcIssuer

log = logging.getLogger("fnhost.auth")

# Asymmetric algorithms only, by the key type that verifies them.
KEY_TYPES: dict[str, str] = {
    **{a: "RSA" for a in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    **{a: "EC" for a in ("ES256", "ES384", "ES512")},
    "EdDSA": "OKP",
}
FETCH_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 1024 * 1024


def check_issuer_config(cfg: OidcIssuer) -> None:
    """Refuse configurations that would weaken verification; raised at startup."""
    if not cfg.issuer:
        raise ValueError("An OIDC issuer needs a non-empty 'issuer'.")
    if not cfg.audience:
        raise ValueError(f"OIDC issuer {cfg.issuer!r} needs an 'audience'.")
    bad = [a for a in cfg.algorithms if a not in KEY_TYPES]
    if bad or not cfg.algorithms:
        raise ValueError(
            f"OIDC issuer {cfg.issuer!r}: algorithms {bad or '[]'} are not allowed; "
            f"choose from {', '.join(KEY_TYPES)} (symmetric algorithms and 'none' never are)."
        )
    for url in (cfg.jwks_uri, cfg.issuer if cfg.jwks_uri is None else None):
        if url is not None and not url.startswith(("https://", "http://")):
            raise ValueError(f"OIDC issuer {cfg.issuer!r}: {url!r} is not an http(s) URL.")


@dataclass
class _Keys:
    by_kid: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetched_at: float = 0.0  # monotonic time of the last successful fetch
    attempted_at: float = -1e18  # monotonic time of the last attempt, success or not
    error: str | None = None


class JwksCache:
    """One issuer's signing keys: fetched lazily, cached with a TTL, refetched on rotation."""

    def __init__(
        self, cfg: OidcIssuer, http: httpx.Client, ttl_seconds: float, min_refetch_seconds: float
    ) -> None:
        self.cfg = cfg
        self.http = http
        self.ttl = ttl_seconds
        self.min_refetch = min_refetch_seconds
        self._keys = _Keys()
        self._lock = threading.Lock()

    def key(self, kid: str | None) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            stale = not self._keys.by_kid or now - self._keys.fetched_at > self.ttl
            unknown = kid is not None and kid not in self._keys.by_kid
            if (stale or unknown) and now - self._keys.attempted_at >= self.min_refetch:
                self._fetch(now)
            keys = self._keys.by_kid
            if not keys and self._keys.error is not None:
                raise Unavailable(
                    f"The signing keys of issuer {self.cfg.issuer!r} cannot be fetched right now."
                )
        if kid is None:
            if len(keys) == 1:
                return next(iter(keys.values()))
            raise Unauthenticated("The token has no 'kid' header and its issuer has several keys.")
        jwk = keys.get(kid)
        if jwk is None:
            raise Unauthenticated(
                f"The token was signed by a key unknown to issuer {self.cfg.issuer!r}."
            )
        return jwk

    def _fetch(self, now: float) -> None:
        self._keys.attempted_at = now
        try:
            uri = self.cfg.jwks_uri or self._discover()
            body = self._get_json(uri)
            raw_keys = body.get("keys") if isinstance(body, dict) else None
            if not isinstance(raw_keys, list):
                raise ValueError("the JWKS has no 'keys' list")
        except (httpx.HTTPError, ValueError) as exc:
            # keep serving the keys we have: an issuer outage must not lock everyone out
            self._keys.error = str(exc)
            log.warning("fetching JWKS of issuer %s failed: %s", self.cfg.issuer, exc)
            return
        by_kid: dict[str, dict[str, Any]] = {}
        for i, jwk in enumerate(raw_keys):
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            if jwk.get("kty") not in set(KEY_TYPES.values()):
                continue  # e.g. "oct" (a shared secret) is never a verification key here
            by_kid[str(jwk.get("kid", f"#{i}"))] = jwk
        self._keys = _Keys(by_kid=by_kid, fetched_at=now, attempted_at=now)
        log.info("fetched %d signing key(s) of issuer %s", len(by_kid), self.cfg.issuer)

    def _discover(self) -> str:
        doc = self._get_json(self.cfg.issuer.rstrip("/") + "/.well-known/openid-configuration")
        uri = doc.get("jwks_uri") if isinstance(doc, dict) else None
        if not isinstance(uri, str):
            raise ValueError("the discovery document has no jwks_uri")
        return uri

    def _get_json(self, url: str) -> Any:
        response = self.http.get(url, headers={"Accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > MAX_JWKS_BYTES:
            raise ValueError(f"{url} returned more than {MAX_JWKS_BYTES} bytes")
        try:
            return json.loads(response.content)
        except ValueError:
            raise ValueError(f"{url} did not return JSON") from None


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def groups_from(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(g for g in value.replace(",", " ").split() if g)
    if isinstance(value, list):
        return tuple(str(g) for g in value if isinstance(g, str | int))
    return ()


class ExternalIssuers:
    """Verifies tokens of the configured issuers and turns them into principals."""

    def __init__(
        self,
        issuers: list[OidcIssuer],
        *,
        ttl_seconds: float = 3600,
        min_refetch_seconds: float = 10,
        leeway_seconds: int = 30,
    ) -> None:
        for cfg in issuers:
            check_issuer_config(cfg)
        self.leeway = leeway_seconds
        self._http = httpx.Client(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False)
        self._issuers = {
            cfg.issuer: JwksCache(cfg, self._http, ttl_seconds, min_refetch_seconds)
            for cfg in issuers
        }

    def knows(self, issuer: Any) -> bool:
        return isinstance(issuer, str) and issuer in self._issuers

    def close(self) -> None:
        self._http.close()

    def verify(self, token: str, issuer: str) -> Principal:
        cache = self._issuers.get(issuer)
        if cache is None:
            raise Unauthenticated(f"Tokens from issuer {issuer!r} are not accepted by this server.")
        cfg = cache.cfg
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("The bearer token is not a JWT.") from None
        alg = header.get("alg")
        if alg not in cfg.algorithms:
            raise Unauthenticated(
                f"The token's signing algorithm {alg!r} is not allowed for issuer {issuer!r} "
                f"(allowed: {', '.join(cfg.algorithms)})."
            )
        kid = header.get("kid")
        jwk = cache.key(kid if isinstance(kid, str) else None)
        if jwk.get("kty") != KEY_TYPES[alg] or jwk.get("alg", alg) != alg:
            raise Unauthenticated("The token's algorithm does not match its signing key.")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg).key
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=cfg.audience,
                issuer=cfg.issuer,
                options={"require": ["exp", "iss", "aud"]},
                leeway=self.leeway,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("The token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("The token is not valid yet (nbf is in the future).") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("The token is for another audience.") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("The token comes from an unknown issuer.") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("The token's signature does not verify.") from None
        except (jwt.InvalidTokenError, jwt.PyJWKError) as exc:
            raise Unauthenticated(f"The token is invalid: {exc}.") from None
        subject = _claim(claims, cfg.subject_claim)
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated(
                f"The token has no {cfg.subject_claim!r} claim naming its principal."
            )
        return Principal(
            subject=subject,
            issuer=cfg.issuer,
            client_id=None,
            admin=False,
            groups=groups_from(_claim(claims, cfg.groups_claim)),
        )
