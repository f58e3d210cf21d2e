"""Deploy markers: every start of an app process records what it runs.

``record_deployment`` is called once per process start (the ``st.App`` lifespan, after
``init_app()`` migrated the schema); ``recent_deployments`` lists them, newest first, for the
System dashboard to draw next to errors and latency, so an incident can be tied to a change.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DBAPIError

from stalwart.core.build import build_commit, build_version
from stalwart.core.database import DB, UnitOfWork
from stalwart.core.logs import get_logger
from stalwart.core.migrations import current_revision
from stalwart.errors import StalwartError
from stalwart.models import Deployment
from stalwart.repositories.tracking import DeploymentRepository

log = get_logger(__name__)


@dataclass(frozen=True)
class DeploymentInfo:
    """One recorded start of an app process."""

    id: int
    started_at: datetime
    version: str
    commit: str
    migration_head: str | None
    host: str
    pid: int

    @classmethod
    def of(cls, row: Deployment) -> DeploymentInfo:
        """The info of a stored row."""
        return cls(
            row.id,
            row.started_at,
            row.version,
            row.commit,
            row.migration_head,
            row.host,
            row.pid,
        )


def record_deployment(db: DB) -> DeploymentInfo | None:
    """Record that this process started, with its version, commit and schema revision.

    A marker is not worth failing a start for: if it cannot be written (a database whose
    schema predates the table, say), that is logged and None returned.
    """
    try:
        head = current_revision(db)

        def work(uow: UnitOfWork) -> DeploymentInfo:
            row = DeploymentRepository(uow).create(
                version=build_version()[:50],
                commit=build_commit(),
                migration_head=head,
                host=socket.gethostname()[:255],
                pid=os.getpid(),
            )
            return DeploymentInfo.of(row)

        info = db.run_tx(work)
    except (StalwartError, DBAPIError) as err:
        log.warning("deployment not recorded", error=f"{type(err).__name__}: {err}")
        return None
    log.info(
        "deployment recorded",
        deployment_id=info.id,
        version=info.version,
        commit=info.commit,
        migration_head=info.migration_head,
    )
    return info


def recent_deployments(
    db: DB, *, since: datetime | None = None, limit: int = 50
) -> list[DeploymentInfo]:
    """Deployments started at or after ``since`` (all if None), newest first."""
    try:
        with db.unit_of_work(read_only=True) as uow:
            rows = DeploymentRepository(uow).recent(since=since, limit=limit)
            return [DeploymentInfo.of(row) for row in rows]
    except DBAPIError as exc:
        raise db.translate_final(exc) from exc
