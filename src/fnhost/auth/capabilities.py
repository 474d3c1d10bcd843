"""Capabilities in the CDF shape and the principal that holds them.

A capability is ``{"<name>Acl": {"actions": [...], "scope": {"all": {}}}}``. Checks ask
for one ACL and one action in one project.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fnhost.errors import InvalidRequest

# Known ACLs and their actions. ``functionsAcl:RUN`` lets a principal call functions
# without being able to change them; WRITE implies RUN.
ACLS: dict[str, tuple[str, ...]] = {
    "functionsAcl": ("READ", "WRITE", "RUN"),
    "filesAcl": ("READ", "WRITE"),
    "sessionsAcl": ("LIST", "CREATE", "DELETE"),
    "assetsAcl": ("READ", "WRITE"),
    "rawAcl": ("READ", "WRITE", "LIST"),
    "groupsAcl": ("READ", "CREATE", "UPDATE", "DELETE", "LIST"),
    "projectsAcl": ("READ", "CREATE", "UPDATE", "LIST"),
}

IMPLIED: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("functionsAcl", "RUN"): (("functionsAcl", "WRITE"),),
    ("rawAcl", "LIST"): (("rawAcl", "READ"),),
    ("groupsAcl", "READ"): (("groupsAcl", "LIST"),),
}

ALL_CAPABILITIES: list[dict[str, Any]] = [
    {acl: {"actions": list(actions), "scope": {"all": {}}}} for acl, actions in ACLS.items()
]


def validate(capabilities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check capability names and actions; raise with a message naming the unknown ones."""
    if not isinstance(capabilities, list):
        raise InvalidRequest("capabilities must be a list.")
    for cap in capabilities:
        if not isinstance(cap, dict) or len(cap) != 1:
            raise InvalidRequest("Each capability must be an object with exactly one ACL key.")
        ((name, body),) = cap.items()
        if name not in ACLS:
            raise InvalidRequest(f"Unknown capability {name!r}. Known: {', '.join(ACLS)}.")
        actions = body.get("actions") if isinstance(body, dict) else None
        if not isinstance(actions, list) or not actions:
            raise InvalidRequest(f"{name} needs a non-empty list of actions.")
        unknown = [a for a in actions if a not in ACLS[name]]
        if unknown:
            raise InvalidRequest(
                f"Unknown action(s) {unknown} for {name}. Allowed: {', '.join(ACLS[name])}."
            )
        scope = body.get("scope", {"all": {}})
        if not isinstance(scope, dict) or "all" not in scope:
            raise InvalidRequest(f"{name}: only the scope {{'all': {{}}}} is supported.")
    return capabilities


def flatten(capabilities: list[dict[str, Any]]) -> frozenset[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for cap in capabilities:
        for name, body in cap.items():
            for action in body.get("actions", []):
                out.add((name, action))
    return frozenset(out)


def allows(granted: frozenset[tuple[str, str]], acl: str, action: str) -> bool:
    if (acl, action) in granted:
        return True
    return any(alt in granted for alt in IMPLIED.get((acl, action), ()))


@dataclass(frozen=True)
class Principal:
    """Who is making a request, as established from a verified token."""

    subject: str
    issuer: str
    client_id: str | None = None
    admin: bool = False
    groups: tuple[str, ...] = ()
    # set when the token was minted for a session (calls made by function code)
    session_id: int | None = None
    session_depth: int = 0
    # session tokens act in exactly one project
    bound_project: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def as_session_principal(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "clientId": self.client_id,
            "admin": self.admin,
            "groups": list(self.groups),
        }

    @classmethod
    def from_session(
        cls, data: dict[str, Any], session_id: int, depth: int, project: str
    ) -> Principal:
        return cls(
            subject=data["subject"],
            issuer=data["issuer"],
            client_id=data.get("clientId"),
            admin=bool(data.get("admin")),
            groups=tuple(data.get("groups") or ()),
            session_id=session_id,
            session_depth=depth,
            bound_project=project,
        )
