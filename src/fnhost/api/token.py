"""The built-in identity provider (OAuth2 client credentials, JWKS, discovery) and token inspect."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from fnhost.api.deps import PrincipalDep, SystemDep
from fnhost.errors import FnhostError

router = APIRouter()


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


@router.post("/oauth2/token", tags=["identity"])
async def token(request: Request, system: SystemDep) -> JSONResponse:
    """OAuth2 token endpoint: client credentials (form body, or HTTP Basic)."""
    try:
        form = await request.form()
    except Exception:
        return _oauth_error(400, "invalid_request", "The body must be form-encoded.")
    grant = form.get("grant_type")
    if grant != "client_credentials":
        return _oauth_error(400, "unsupported_grant_type", "Only client_credentials is supported.")
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    if not isinstance(client_id, str) or not isinstance(client_secret, str):
        return _oauth_error(400, "invalid_request", "client_id and client_secret are required.")
    from starlette.concurrency import run_in_threadpool

    try:
        access_token, expires_in = await run_in_threadpool(
            system.access.client_credentials_grant, client_id, client_secret
        )
    except FnhostError:
        return _oauth_error(401, "invalid_client", "Invalid client credentials.")
    return JSONResponse(
        {"access_token": access_token, "token_type": "Bearer", "expires_in": expires_in},
        headers={"Cache-Control": "no-store"},
    )


@router.get("/oauth2/jwks", tags=["identity"])
def jwks(system: SystemDep) -> dict[str, Any]:
    return system.tokens.key.jwks()


@router.get("/.well-known/openid-configuration", tags=["identity"])
def discovery(system: SystemDep) -> dict[str, Any]:
    base = system.public_url
    return {
        "issuer": system.tokens.issuer,
        "token_endpoint": f"{base}/oauth2/token",
        "jwks_uri": f"{base}/oauth2/jwks",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["token"],
        "subject_types_supported": ["public"],
    }


@router.get("/api/v1/token/inspect", tags=["identity"])
def inspect(system: SystemDep, principal: PrincipalDep) -> dict[str, Any]:
    from fnhost.auth.capabilities import ACLS

    projects = []
    capabilities = []
    for project in system.access.projects_of(principal):
        granted = system.access.granted(principal, project)
        projects.append({"projectUrlName": project, "groups": system.access.group_ids_of(principal, project)})
        by_acl: dict[str, list[str]] = {}
        for acl, action in sorted(granted):
            by_acl.setdefault(acl, []).append(action)
        for acl in ACLS:
            if acl in by_acl:
                capabilities.append(
                    {
                        acl: {"actions": by_acl[acl], "scope": {"all": {}}},
                        "projectScope": {"projects": [project]},
                    }
                )
    return {"subject": principal.subject, "projects": projects, "capabilities": capabilities}
