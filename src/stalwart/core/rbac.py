"""Roles and permissions: who may do what. Pure: no database, no Streamlit.

A role is a name for a set of ``Permission``s. The built-in roles nest (viewer ⊂ editor ⊂
admin); custom roles come from ``STALWART_CUSTOM_ROLES`` (JSON, e.g.
``{"auditor": ["view", "export"]}``). A ``Principal`` is who is acting: a signed-in user, the
system (the CLI, schedules), or nobody (anonymous). ``require`` is the one check every
service calls before it acts; pages hide what ``Principal.can`` refuses, but hiding a button is
never the check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Literal

from stalwart.errors import PermissionDeniedError


class Permission(StrEnum):
    """What a role may do; each service action needs exactly one of these."""

    #: see pages and data
    VIEW = "view"
    #: Save and Apply forms
    EDIT_FORMS = "edit_forms"
    #: enqueue jobs, and cancel or retry one's own
    RUN_JOBS = "run_jobs"
    #: cancel or retry other people's jobs
    MANAGE_JOBS = "manage_jobs"
    #: download or export data
    EXPORT = "export"
    #: admin pages: users, roles, sessions
    ADMIN = "admin"


P = Permission
_VIEWER: Final = frozenset({P.VIEW})
_EDITOR: Final = _VIEWER | {P.EDIT_FORMS, P.RUN_JOBS, P.EXPORT}
_ADMIN: Final = frozenset(Permission)

#: the built-in roles, weakest first; each has every permission of the one before
BUILTIN_ROLES: Final[Mapping[str, frozenset[Permission]]] = {
    "viewer": _VIEWER,
    "editor": _EDITOR,
    "admin": _ADMIN,
}
#: the pseudo-role of the system principal (CLI, schedules); no user can be given it
SYSTEM_ROLE: Final = "system"
ANONYMOUS_ROLE: Final = "anonymous"
_ROLE_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,49}")


@dataclass(frozen=True)
class Action:
    """Something a user does that a service checks: its permission and words for messages."""

    name: str
    permission: Permission
    #: completes "Your role may not ...", e.g. "save a form"
    description: str


VIEW_PAGE: Final = Action("page.view", P.VIEW, "open this page")
SAVE_FORM: Final = Action("form.save", P.EDIT_FORMS, "save a form")
APPLY_FORM: Final = Action("form.apply", P.EDIT_FORMS, "apply a form")
ENQUEUE_JOB: Final = Action("job.enqueue", P.RUN_JOBS, "start a job")
CANCEL_OWN_JOB: Final = Action("job.cancel_own", P.RUN_JOBS, "cancel or retry your own jobs")
CANCEL_OTHERS_JOB: Final = Action(
    "job.cancel_others", P.MANAGE_JOBS, "cancel or retry other people's jobs"
)
EXPORT_DATA: Final = Action("data.export", P.EXPORT, "export data")
OPEN_ADMIN: Final = Action("page.admin", P.ADMIN, "open the admin pages")
MANAGE_USERS: Final = Action("users.manage", P.ADMIN, "manage users and their sessions")
#: every action the reference app checks (the authorisation matrix test walks this list)
ACTIONS: Final[tuple[Action, ...]] = (
    VIEW_PAGE,
    SAVE_FORM,
    APPLY_FORM,
    ENQUEUE_JOB,
    CANCEL_OWN_JOB,
    CANCEL_OTHERS_JOB,
    EXPORT_DATA,
    OPEN_ADMIN,
    MANAGE_USERS,
)


def parse_custom_roles(raw: Mapping[str, Iterable[str]]) -> dict[str, frozenset[Permission]]:
    """Validate custom roles (name -> permission names); ``ValueError`` says what is wrong."""
    known = ", ".join(p.value for p in Permission)
    roles: dict[str, frozenset[Permission]] = {}
    for name, permissions in raw.items():
        if name in BUILTIN_ROLES or name in (SYSTEM_ROLE, ANONYMOUS_ROLE):
            raise ValueError(f"role {name!r} is built in and cannot be redefined")
        if not isinstance(name, str) or not _ROLE_NAME.fullmatch(name):
            raise ValueError(
                f"role name {name!r} must be 1-50 characters: a-z first, then a-z, 0-9, _ or -"
            )
        if isinstance(permissions, str) or not isinstance(permissions, Iterable):
            raise ValueError(f"role {name!r}: give its permissions as a list of names")
        granted = set()
        for perm in permissions:
            try:
                granted.add(Permission(perm))
            except ValueError:
                raise ValueError(
                    f"role {name!r}: unknown permission {perm!r} (known: {known})"
                ) from None
        roles[name] = frozenset(granted)
    return roles


class Roles:
    """The roles in force: the built-in ones plus the validated custom ones."""

    def __init__(self, custom: Mapping[str, Iterable[str]] | None = None) -> None:
        self._roles: dict[str, frozenset[Permission]] = {
            **BUILTIN_ROLES,
            **parse_custom_roles(custom or {}),
        }

    @property
    def names(self) -> tuple[str, ...]:
        """Every role a user can be given: built-in ones first, then custom ones by name."""
        custom = sorted(set(self._roles) - set(BUILTIN_ROLES))
        return (*BUILTIN_ROLES, *custom)

    def exists(self, role: str) -> bool:
        """True if users can be given ``role``."""
        return role in self._roles

    def permissions(self, role: str) -> frozenset[Permission]:
        """What ``role`` may do; an unknown role (e.g. one removed from the config) may nothing."""
        return self._roles.get(role, frozenset())

    def granting(self, permission: Permission) -> tuple[str, ...]:
        """The roles that have ``permission``, in ``names`` order."""
        return tuple(name for name in self.names if permission in self._roles[name])

    def principal(
        self, *, user_id: int, username: str, role: str, session_id: str | None = None
    ) -> Principal:
        """The principal of a signed-in user with ``role``."""
        return Principal(
            kind="user",
            user_id=user_id,
            username=username,
            role=role,
            permissions=self.permissions(role),
            session_id=session_id,
        )


#: the built-in roles only (for callers without a config at hand)
DEFAULT_ROLES: Final = Roles()


@dataclass(frozen=True)
class Principal:
    """Who is acting: a user (with a role), the system, or nobody."""

    kind: Literal["user", "system", "anonymous"]
    username: str
    role: str
    permissions: frozenset[Permission] = field(default_factory=frozenset)
    user_id: int | None = None
    #: the login session this principal came from (its stored id, never the token)
    session_id: str | None = None

    @classmethod
    def system(cls, name: str = "system") -> Principal:
        """The system acting for an operator (CLI, schedules): every permission."""
        return cls(kind="system", username=name, role=SYSTEM_ROLE, permissions=_ADMIN)

    @classmethod
    def anonymous(cls) -> Principal:
        """Nobody signed in: no permission at all."""
        return cls(kind="anonymous", username="anonymous", role=ANONYMOUS_ROLE)

    @property
    def authenticated(self) -> bool:
        """True for a signed-in user or the system."""
        return self.kind != "anonymous"

    def can(self, what: Permission | Action) -> bool:
        """True if this principal has the permission (of the action)."""
        permission = what.permission if isinstance(what, Action) else what
        return permission in self.permissions


def require(principal: Principal, what: Permission | Action, *, roles: Roles | None = None) -> None:
    """Return if ``principal`` may do ``what``; raise ``PermissionDeniedError`` otherwise.

    The message says what was refused and which roles would allow it (``roles``: the roles in
    force, default the built-in ones).
    """
    if principal.can(what):
        return
    registry = roles or DEFAULT_ROLES
    permission = what.permission if isinstance(what, Action) else what
    doing = what.description if isinstance(what, Action) else _describe(permission)
    granted_by = registry.granting(permission)
    if principal.kind == "anonymous":
        message = f"You need to sign in to {doing}."
        action = "Sign in; your page and your unsaved input are kept."
    else:
        # admin has every permission, so ``granted_by`` is never empty
        message = (
            f"Your role {principal.role!r} may not {doing}: that needs the "
            f"{permission.value!r} permission, which these roles have: {', '.join(granted_by)}."
        )
        action = None
    raise PermissionDeniedError(
        message, action, permission=permission.value, role=principal.role, granted_by=granted_by
    )


def job_action(principal: Principal, owner: str) -> Action:
    """What cancelling or retrying a job of ``owner`` means for ``principal``: own or others'."""
    return CANCEL_OWN_JOB if owner == principal.username else CANCEL_OTHERS_JOB


_DESCRIPTIONS: Final[Mapping[Permission, str]] = {
    P.VIEW: "see this",
    P.EDIT_FORMS: "save or apply forms",
    P.RUN_JOBS: "start jobs or cancel your own",
    P.MANAGE_JOBS: "cancel or retry other people's jobs",
    P.EXPORT: "export data",
    P.ADMIN: "administer users",
}


def _describe(permission: Permission) -> str:
    return _DESCRIPTIONS[permission]
