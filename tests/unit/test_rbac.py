"""Roles and permissions: the matrix of every permission against every role, and the messages."""

from __future__ import annotations

import pytest

from stalwart.core import rbac
from stalwart.core.config import load_config
from stalwart.core.rbac import (
    ACTIONS,
    BUILTIN_ROLES,
    Permission,
    Principal,
    Roles,
    job_action,
    parse_custom_roles,
    require,
)
from stalwart.errors import ConfigError, PermissionDeniedError

P = Permission
ROLES = Roles({"auditor": ["view", "export"], "jobkeeper": ["view", "run_jobs", "manage_jobs"]})
#: what each role may do: the authorisation matrix, written out by hand
MATRIX: dict[str, set[Permission]] = {
    "viewer": {P.VIEW},
    "editor": {P.VIEW, P.EDIT_FORMS, P.RUN_JOBS, P.EXPORT},
    "admin": set(Permission),
    "auditor": {P.VIEW, P.EXPORT},
    "jobkeeper": {P.VIEW, P.RUN_JOBS, P.MANAGE_JOBS},
}


def principal(role: str) -> Principal:
    return ROLES.principal(user_id=1, username="pat", role=role)


@pytest.mark.parametrize("role", list(MATRIX))
@pytest.mark.parametrize("permission", list(Permission))
def test_matrix_every_permission_against_every_role(role: str, permission: Permission) -> None:
    who = principal(role)
    allowed = permission in MATRIX[role]
    assert who.can(permission) is allowed
    if allowed:
        require(who, permission, roles=ROLES)
    else:
        with pytest.raises(PermissionDeniedError) as info:
            require(who, permission, roles=ROLES)
        assert info.value.permission == permission.value
        assert info.value.role == role
        assert set(info.value.granted_by) == {
            r for r, perms in MATRIX.items() if permission in perms
        }


@pytest.mark.parametrize("role", list(MATRIX))
@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.name)
def test_matrix_every_action_against_every_role(role: str, action: rbac.Action) -> None:
    who = principal(role)
    if action.permission in MATRIX[role]:
        require(who, action, roles=ROLES)
    else:
        with pytest.raises(PermissionDeniedError, match=action.description):
            require(who, action, roles=ROLES)


def test_builtin_roles_nest() -> None:
    assert BUILTIN_ROLES["viewer"] < BUILTIN_ROLES["editor"] < BUILTIN_ROLES["admin"]
    assert BUILTIN_ROLES["admin"] == frozenset(Permission)
    assert ROLES.names == ("viewer", "editor", "admin", "auditor", "jobkeeper")


def test_denial_says_what_was_refused_and_who_may() -> None:
    with pytest.raises(PermissionDeniedError) as info:
        require(principal("viewer"), rbac.SAVE_FORM, roles=ROLES)
    message = info.value.message
    assert "role 'viewer' may not save a form" in message
    assert "'edit_forms'" in message
    assert "editor, admin" in message
    assert "your input is kept" in info.value.action
    with pytest.raises(PermissionDeniedError, match=r"export data.*auditor"):
        require(principal("viewer"), P.EXPORT, roles=ROLES)


def test_anonymous_is_asked_to_sign_in_and_system_may_everything() -> None:
    nobody = Principal.anonymous()
    assert not nobody.authenticated
    with pytest.raises(PermissionDeniedError, match="You need to sign in to open this page"):
        require(nobody, rbac.VIEW_PAGE)
    system = Principal.system("cli")
    assert system.authenticated
    assert system.username == "cli"
    for permission in Permission:
        require(system, permission)


def test_unknown_role_may_nothing() -> None:
    ghost = ROLES.principal(user_id=2, username="ghost", role="removed-from-config")
    assert ghost.permissions == frozenset()
    with pytest.raises(PermissionDeniedError, match="role 'removed-from-config'"):
        require(ghost, P.VIEW, roles=ROLES)


def test_cancelling_a_job_needs_more_when_it_is_someone_elses() -> None:
    editor = principal("editor")
    assert job_action(editor, "pat") is rbac.CANCEL_OWN_JOB
    assert job_action(editor, "sam") is rbac.CANCEL_OTHERS_JOB
    require(editor, job_action(editor, "pat"), roles=ROLES)
    with pytest.raises(PermissionDeniedError, match="other people's jobs"):
        require(editor, job_action(editor, "sam"), roles=ROLES)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"admin": ["view"]}, "built in"),
        ({"system": ["view"]}, "built in"),
        ({"Auditor": ["view"]}, "must be 1-50 characters"),
        ({"auditor": ["view", "fly"]}, "unknown permission 'fly'"),
        ({"auditor": "view"}, "as a list"),
    ],
)
def test_custom_roles_are_validated(raw: dict[str, object], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        parse_custom_roles(raw)  # type: ignore[arg-type]


def test_custom_roles_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALWART_CUSTOM_ROLES", '{"auditor": ["export", "view"]}')
    monkeypatch.setenv("STALWART_OIDC_DEFAULT_ROLE", "auditor")
    cfg = load_config()
    assert cfg.custom_roles == {"auditor": ["export", "view"]}
    assert Roles(cfg.custom_roles).permissions("auditor") == {P.VIEW, P.EXPORT}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{not json", "not JSON"),
        ('{"auditor": ["fly"]}', "unknown permission 'fly'"),
        ('{"editor": ["view"]}', "built in"),
    ],
)
def test_bad_custom_roles_name_the_setting_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: str
) -> None:
    monkeypatch.setenv("STALWART_CUSTOM_ROLES", value)
    with pytest.raises(ConfigError) as info:
        load_config()
    assert "STALWART_CUSTOM_ROLES" in info.value.message
    assert expected in info.value.message
    assert "permissions: view, edit_forms" in info.value.message


def test_empty_custom_roles_setting_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STALWART_CUSTOM_ROLES", " ")
    assert load_config().custom_roles == {}
