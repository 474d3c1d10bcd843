"""Groups: which principals hold which capabilities in one project.

Members are named by built-in client id (``members``), by an external identity
provider's group id carried in the token's groups claim (``sourceId``), or as
``"allUserAccounts"`` (every authenticated principal). Operator commands (``fnhost admin
groups …``) use the unchecked ``add``/``remove``; API callers go through ``create``,
``list`` and ``delete``, which check ``groupsAcl``.

As in CDF, a project's first principal is a member of a group that lists: admin clients
join the project's ``fnhost-admins`` group, which holds every capability (``is_admin``
still grants them every project, as before), and a client made with capabilities joins
the group named after exactly those capabilities (``join``), made when there is none yet.
"""

from __future__ import annotations

import builtins
import hashlib
from dataclasses import dataclass, field
from typing import Any

from fnhost.auth import capabilities as caps
from fnhost.auth.capabilities import Principal
from fnhost.clock import now_ms
from fnhost.errors import InvalidRequest, NotFound
from fnhost.services.access import Access
from fnhost.services.identifiers import id_entry, resolve_all
from fnhost.store import groups as store
from fnhost.store import projects as project_store
from fnhost.store.db import Database
from fnhost.store.groups import GroupRow

ALL_USER_ACCOUNTS = "allUserAccounts"
ADMIN_GROUP = "fnhost-admins"
MAX_NAME = 140
MAX_MEMBERS = 1000
MAX_METADATA = 16  # keys; keys at most 32 and values at most 512 characters (as CDF)


def parse_capability(spec: str) -> dict[str, Any]:
    """``"functionsAcl:READ,WRITE"`` → ``{"functionsAcl": {"actions": [...], "scope": {"all": {}}}}``."""
    name, sep, actions = spec.partition(":")
    name = name.strip()
    if not sep or not name:
        raise InvalidRequest(f"Capability {spec!r} must look like 'functionsAcl:READ,WRITE'.")
    if not name.endswith("Acl"):
        name += "Acl"
    listed = [a.strip().upper() for a in actions.split(",") if a.strip()]
    capability = {name: {"actions": listed, "scope": {"all": {}}}}
    caps.validate([capability])
    return capability


@dataclass(frozen=True)
class GroupSpec:
    """A group: what its members may do (CDF capability objects, validated by
    ``auth.capabilities``), and who they are: principals by id in ``members`` (or
    ``ALL_USER_ACCOUNTS``), or the members of an external group ``source_id``."""

    name: str
    capabilities: list[dict[str, Any]] = field(default_factory=list)
    source_id: str | None = None
    members: list[str] | str | None = None
    metadata: dict[str, str] | None = None


def _check(spec: GroupSpec) -> dict[str, Any]:
    """The row's columns for ``spec``, checked."""
    name = spec.name
    if not name.strip() or len(name) > MAX_NAME:
        raise InvalidRequest(f"name is required: a string of 1 to {MAX_NAME} characters.", field="name")
    caps.validate(spec.capabilities)
    capabilities = [
        {acl: {"actions": list(body["actions"]), "scope": {"all": {}}}}
        for cap in spec.capabilities
        for acl, body in cap.items()
    ]
    source_id = spec.source_id or None
    if source_id is not None and len(source_id) > 255:
        raise InvalidRequest("sourceId must be a string of at most 255 characters.", field="source_id")
    members = spec.members
    if members is not None and members != ALL_USER_ACCOUNTS:
        if not isinstance(members, list) or not all(members):
            raise InvalidRequest(
                f"members must be a list of ids or {ALL_USER_ACCOUNTS!r}.", field="members"
            )
        if len(members) > MAX_MEMBERS:
            raise InvalidRequest(f"A group has at most {MAX_MEMBERS} members.", field="members")
    if source_id is not None and members is not None:
        raise InvalidRequest("A group has either sourceId or members, not both.", field="source_id")
    metadata = spec.metadata
    if metadata is not None and (
        len(metadata) > MAX_METADATA
        or not all(len(k) <= 32 and len(v) <= 512 for k, v in metadata.items())
    ):
        raise InvalidRequest(
            f"metadata must be an object of at most {MAX_METADATA} string values, keys of "
            "at most 32 and values of at most 512 characters.",
            field="metadata",
        )
    return {
        "name": name,
        "capabilities": capabilities,
        "source_id": source_id,
        "members": members,
        "metadata_": metadata or None,
    }


def _same_capabilities(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return caps.flatten(a) == caps.flatten(b)


def capability_group_name(capabilities: list[dict[str, Any]]) -> str:
    """The name of the group for exactly these capabilities, the same for the same set:
    ``"filesAcl:READ functionsAcl:READ,RUN"`` (ACLs sorted, actions in the ACL's order)."""
    granted = caps.flatten(capabilities)
    specs = []
    for acl in sorted({acl for acl, _ in granted}):
        actions = [a for a in caps.ACLS[acl] if (acl, a) in granted]
        specs.append(f"{acl}:{','.join(actions)}")
    name = " ".join(specs)
    if len(name) > MAX_NAME:  # still one name per set: a digest of the whole
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = f"{name[: MAX_NAME - len(digest) - 3].rstrip()} #{digest}"
    return name


def join(
    project: str, name: str, capabilities: list[dict[str, Any]], client_id: str, *, session: Any
) -> GroupRow:
    """Make ``client_id`` a member of the project's group ``name`` that holds exactly
    ``capabilities``; make the group if there is none. In the caller's transaction."""
    checked = _check(GroupSpec(name=name, capabilities=capabilities))
    for row in store.by_name(project, name, session=session):
        if isinstance(row.members, list) and _same_capabilities(row.capabilities, checked["capabilities"]):
            if client_id not in row.members:
                row.members = [*row.members, client_id]  # a new list: JSON columns see assignment
            return row
    return store.add(
        GroupRow(project=project, created_time=now_ms(), **{**checked, "members": [client_id]}),
        session=session,
    )


class Groups:
    def __init__(self, db: Database, access: Access) -> None:
        self.db = db
        self.access = access

    # -- API (capability checked) -----------------------------------------------------
    def create(
        self, project: str, caller: Principal, specs: builtins.list[GroupSpec]
    ) -> builtins.list[GroupRow]:
        self.access.require(caller, project, "groupsAcl", "CREATE")
        return self.add(project, specs)

    def list(self, project: str, caller: Principal, *, all_groups: bool) -> builtins.list[GroupRow]:
        if all_groups:
            self.access.require(caller, project, "groupsAcl", "LIST")
            with self.db.read() as s:
                return store.list_for_project(project, session=s)
        # one's own groups: any member of the project may see them
        self.access.require_project_member(caller, project)
        own = set(self.access.group_ids_of(caller, project))
        with self.db.read() as s:
            return [g for g in store.list_for_project(project, session=s) if g.id in own]

    def delete(self, project: str, caller: Principal, ids: builtins.list[int]) -> None:
        self.access.require(caller, project, "groupsAcl", "DELETE")
        self.remove(project, ids)

    # -- operator (no principal) --------------------------------------------------------
    def add(self, project: str, specs: builtins.list[GroupSpec]) -> builtins.list[GroupRow]:
        checked = [_check(v) for v in specs]
        now = now_ms()
        with self.db.write() as s:
            if project_store.get(project, session=s) is None:
                raise NotFound(f"Project {project!r} does not exist.")
            return [
                store.add(GroupRow(project=project, created_time=now, **c), session=s)
                for c in checked
            ]

    def list_all(self, project: str | None) -> builtins.list[GroupRow]:
        with self.db.read() as s:
            if project is None:
                return store.list_all(session=s)
            return store.list_for_project(project, session=s)

    def remove(self, project: str, ids: builtins.list[int]) -> None:
        with self.db.write() as s:
            rows = [store.get(project, i, session=s) for i in ids]
            for r in resolve_all(ids, rows, what="Groups", ignore_unknown=False, entry=id_entry):
                s.delete(r)
