"""Exports on behalf of users: ``export`` permission checked (and a refusal audited) first.

The file itself is made by ``services.exports`` (formula-safe CSV); this adds who may have it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from stalwart.core.access import AccessControl
from stalwart.core.logs import get_logger
from stalwart.core.rbac import EXPORT_DATA, Principal
from stalwart.core.tracking import DATA_EXPORT, track
from stalwart.services.exports import to_csv

log = get_logger(__name__)


class ExportService:
    """Makes export files for users whose role has ``export``."""

    def __init__(self, access: AccessControl) -> None:
        self.access = access

    def csv(
        self,
        actor: Principal,
        rows: Iterable[Mapping[str, object]],
        columns: Sequence[str] | None = None,
        *,
        what: str,
    ) -> bytes:
        """``rows`` as a CSV file for ``actor``; ``what`` names the data (for the audit)."""
        self.access.authorize(actor, EXPORT_DATA, entity="export", entity_id=what)
        data = to_csv(rows, columns)
        log.info("data exported", what=what, user=actor.user_id, bytes=len(data))
        track(DATA_EXPORT, {"what": what, "bytes": len(data)}, actor=actor)
        return data
