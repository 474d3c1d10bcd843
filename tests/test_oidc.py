"""External OIDC issuers: tokens from an identity provider the test itself runs on 127.0.0.1.

The test serves a JWKS (and a discovery document), signs tokens with its own keys, and
checks that fnhost verifies them strictly, maps the groups claim to groups, fetches and
caches keys, and follows a key rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cognite.client.data_classes.capabilities import FunctionsAcl
from cognite.client.exceptions import CogniteAPIError, CogniteProjectAccessError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.live import LiveServer, free_port, token_client

AUDIENCE = "fnhost-ext"
REFETCH_SECONDS = 4  # the server's minimum JWKS refetch interval (FNHOST_OIDC_JWKS_MIN_REFETCH_SECONDS)


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


class Key:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.private.public_key().public_numbers()
        self.jwk = {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": _b64(numbers.n), "e": _b64(numbers.e)}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


class Idp:
    """A tiny identity provider: JWKS + discovery over HTTP, tokens signed in-process."""

    def __init__(self) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/realm"
        self.keys = [Key("k1")]
        self.jwks_hits = 0
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/realm/.well-known/openid-configuration":
                    body = {"issuer": idp.issuer, "jwks_uri": f"{idp.issuer}/jwks"}
                elif self.path == "/realm/jwks":
                    idp.jwks_hits += 1
                    body = {"keys": [k.jwk for k in idp.keys]}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                raw = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def token(self, key: Key | None = None, *, headers: dict[str, Any] | None = None, **claims: Any) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "user-1",
            "iat": now,
            "nbf": now - 5,
            "exp": now + 600,
            "groups": ["idp-fn-users"],
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        return jwt.encode(payload, key.private, algorithm="RS256", headers={"kid": key.kid, **(headers or {})})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def idp() -> Iterator[Idp]:
    provider = Idp()
    yield provider
    provider.close()


@pytest.fixture(scope="module")
def ext_server(idp: Idp, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    issuers = [
        # keys found through the discovery document; groups in a nested claim for one of them
        {"issuer": idp.issuer, "audience": [AUDIENCE, "other-aud"], "groupsClaim": "groups"},
    ]
    live = LiveServer(
        tmp_path_factory.mktemp("oidc-home"),
        env={
            "FNHOST_OIDC_ISSUERS": json.dumps(issuers),
            # long enough for the test's burst of ten requests to fall within it on a busy machine
            "FNHOST_OIDC_JWKS_MIN_REFETCH_SECONDS": str(REFETCH_SECONDS),
            "FNHOST_OIDC_LEEWAY_SECONDS": "0",
        },
    ).start()
    live.cli(
        "admin", "groups", "create", "fn-users", "--source-id", "idp-fn-users",
        "-c", "functionsAcl:READ", "-c", "sessionsAcl:CREATE",
    )
    live.cli("admin", "groups", "create", "by-subject", "--member", "user-2", "-c", "filesAcl:READ")
    yield live
    live.stop()


def _status(live: LiveServer, token: str) -> tuple[int, str]:
    r = httpx.post(
        f"{live.base_url}/api/v1/projects/default/functions/list",
        json={},
        headers={"Authorization": f"Bearer {token}"},
    )
    return r.status_code, r.json().get("error", {}).get("message", "")


def test_external_token_with_a_callable(ext_server: LiveServer, idp: Idp) -> None:
    minted: list[str] = []

    def fresh_token() -> str:
        minted.append(idp.token())
        return minted[-1]

    client = token_client(ext_server.base_url, "default", fresh_token)
    assert client.functions.list() is not None
    assert len(minted) >= 1
    inspected = client.iam.token.inspect()
    assert inspected.subject == "user-1"
    assert [p.url_name for p in inspected.projects] == ["default"]
    assert client.iam.verify_capabilities([FunctionsAcl([FunctionsAcl.Action.Read], FunctionsAcl.Scope.All())]) == []
    # the group grants READ only
    with pytest.raises(CogniteAPIError) as err:
        client.functions.delete(id=1)
    assert err.value.code == 403 and "functionsAcl:WRITE" in err.value.message
    # and sessions by token exchange, which keep the principal's IdP groups
    created = client.iam.sessions.create(session_type="TOKEN_EXCHANGE")
    assert created.nonce and created.status == "READY"


def test_membership_by_claim_and_subject(ext_server: LiveServer, idp: Idp) -> None:
    no_group = token_client(ext_server.base_url, "default", idp.token(groups=[]))
    with pytest.raises(CogniteProjectAccessError):
        no_group.functions.list()
    wrong_group = token_client(ext_server.base_url, "default", idp.token(groups=["someone-else"]))
    with pytest.raises(CogniteProjectAccessError):
        wrong_group.functions.list()
    # a group that lists the subject as a member
    by_subject = token_client(ext_server.base_url, "default", idp.token(sub="user-2", groups=None))
    assert by_subject.files.list(limit=1) is not None
    with pytest.raises(CogniteAPIError) as err:
        by_subject.functions.list()
    assert err.value.code == 403 and "functionsAcl:READ" in err.value.message
    # a groups claim given as a space-separated string works too
    as_string = token_client(ext_server.base_url, "default", idp.token(groups="a idp-fn-users"))
    assert as_string.functions.list() is not None


def test_bad_tokens_are_refused(ext_server: LiveServer, idp: Idp) -> None:
    now = int(time.time())
    stranger = Key("k1")  # same kid, different key: a forged signature
    good_header = jwt.get_unverified_header(idp.token())
    unsigned_payload = base64.urlsafe_b64encode(
        json.dumps({"iss": idp.issuer, "aud": AUDIENCE, "sub": "x", "exp": now + 600, "groups": ["idp-fn-users"]}).encode()
    ).rstrip(b"=").decode()
    none_header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": "k1"}).encode()).rstrip(b"=").decode()
    # the classic key-confusion attack: HMAC "signed" with the issuer's public key as secret
    hs_header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": "k1"}).encode()).rstrip(b"=").decode()
    hs_signing_input = f"{hs_header}.{unsigned_payload}".encode()
    hs_sig = base64.urlsafe_b64encode(
        hmac.new(idp.keys[0].public_pem(), hs_signing_input, hashlib.sha256).digest()
    ).rstrip(b"=").decode()
    hs_token = f"{hs_header}.{unsigned_payload}.{hs_sig}"
    cases = {
        "expired": (idp.token(exp=now - 60, iat=now - 700, nbf=now - 700), "expired"),
        "not yet valid": (idp.token(nbf=now + 600), "not valid yet"),
        "wrong signature": (idp.token(key=stranger), "signature"),
        "alg none": (f"{none_header}.{unsigned_payload}.", "algorithm"),
        "HS256 with the public key": (hs_token, "algorithm"),
        "wrong audience": (idp.token(aud="someone-else"), "audience"),
        "unknown issuer": (idp.token(iss="http://127.0.0.1:1/evil"), "not accepted"),
        "no exp": (idp.token(exp=None), "exp"),
        "unknown kid": (idp.token(headers={"kid": "nope"}), "unknown"),
    }
    assert good_header["kid"] == "k1"
    for name, (token, needle) in cases.items():
        status, message = _status(ext_server, token)
        assert status == 401, (name, status, message)
        assert needle in message, (name, message)
    # and the SDK reports them as project access errors
    with pytest.raises(CogniteProjectAccessError):
        token_client(ext_server.base_url, "default", cases["expired"][0]).functions.list()


def test_key_rotation_and_refetch_rate_limit(ext_server: LiveServer, idp: Idp) -> None:
    assert _status(ext_server, idp.token())[0] == 200
    hits_before = idp.jwks_hits
    # cached: many good tokens, no new fetch
    for _ in range(5):
        assert _status(ext_server, idp.token())[0] == 200
    assert idp.jwks_hits == hits_before
    # rotate: the IdP publishes k2 and signs with it
    new = Key("k2")
    idp.keys = [new, idp.keys[0]]
    time.sleep(REFETCH_SECONDS + 0.1)  # past the minimum refetch interval of the server under test
    assert _status(ext_server, idp.token(key=new))[0] == 200
    assert idp.jwks_hits == hits_before + 1
    # unknown kids in a burst: at most one more fetch within the refetch interval
    # (the tokens are made first: ten RSA keys take a while to generate on a busy machine)
    unknown = [idp.token(key=Key(f"made-up-{i}")) for i in range(10)]
    burst_start = idp.jwks_hits
    for token in unknown:
        assert _status(ext_server, token)[0] == 401
    assert idp.jwks_hits - burst_start <= 1
    # the old key is retired: tokens signed with it stop working once the JWKS drops it
    old = idp.keys[1]
    idp.keys = [new]
    time.sleep(REFETCH_SECONDS + 0.1)
    assert _status(ext_server, idp.token(key=Key("k3")))[0] == 401  # triggers a refetch
    assert _status(ext_server, idp.token(key=old))[0] == 401
    assert _status(ext_server, idp.token(key=new))[0] == 200


def test_misconfigured_issuer_refuses_to_start(tmp_path: Any) -> None:
    bad = [{"issuer": "http://127.0.0.1:1/x", "audience": "a", "jwksUri": "http://127.0.0.1:1/j", "algorithms": ["HS256"]}]
    live = LiveServer(tmp_path / "bad", env={"FNHOST_OIDC_ISSUERS": json.dumps(bad)})
    with pytest.raises(RuntimeError) as err:
        live.start(timeout=30)
    assert "HS256" in str(err.value)
