"""The one access check services call: ``AccessControl.authorize``, which audits every denial.

``core.rbac`` says what a role may do; this adds what a refusal leaves behind (an audit row and a
log line) so that a viewer who crafts a request for an editor's action is refused *and* seen.
Services hold an ``AccessControl`` and call it before their transaction; hiding a button in a
page is a courtesy, never the check.
"""

from __future__ import annotations

from stalwart.core.database import DB, UnitOfWork
from stalwart.core.logs import get_logger
from stalwart.core.rbac import DEFAULT_ROLES, Action, Permission, Principal, Roles, require
from stalwart.errors import PermissionDeniedError

log = get_logger(__name__)


class AccessControl:
    """Checks a principal against the roles in force; a denial is audited, then raised."""

    def __init__(self, db: DB, roles: Roles = DEFAULT_ROLES) -> None:
        self.db = db
        self.roles = roles

    def can(self, principal: Principal, what: Permission | Action) -> bool:
        """True if ``principal`` may do ``what`` (for pages deciding what to show)."""
        return principal.can(what)

    def authorize(
        self,
        principal: Principal,
        what: Permission | Action,
        *,
        entity: str = "",
        entity_id: object = "",
    ) -> None:
        """Return if ``principal`` may do ``what``; otherwise audit the denial and raise.

        ``PermissionDeniedError`` says what was refused and which roles allow it. The denial's
        audit row is written in a transaction of its own (the refused action has none).
        """
        try:
            require(principal, what, roles=self.roles)
        except PermissionDeniedError as err:
            name = what.name if isinstance(what, Action) else what.value
            details = {
                "action": name,
                "permission": err.permission,
                "role": principal.role,
                "entity": entity,
                "entity_id": str(entity_id),
            }

            def record(uow: UnitOfWork) -> None:
                uow.audit.record("denied", "access", name, None, details)

            try:
                self.db.run_tx(record, user=principal.username)
            except Exception:  # the denial stands even if its audit row cannot be written
                log.exception("could not audit an access denial", action=name)
            log.info("access denied", action=name, role=principal.role, user=principal.user_id)
            raise
