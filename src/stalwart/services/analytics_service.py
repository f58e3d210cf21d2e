"""Funnels over the tracked events, for administrators.

Every read checks ``admin`` (``OPEN_ADMIN``) first: events hold only pseudonyms, but how
people use the app is still nobody else's business. The queries are the repository's
(``repositories.tracking``); this adds the access check and the conversion rates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, TypeVar

from sqlalchemy.exc import DBAPIError

from stalwart.core.access import AccessControl
from stalwart.core.database import DB, UnitOfWork
from stalwart.core.rbac import OPEN_ADMIN, Principal
from stalwart.repositories.tracking import EventRepository, FunnelStep, StepChoice
from stalwart.services.deployments import DeploymentInfo, recent_deployments

T = TypeVar("T")
#: steps one funnel may have (each is one CTE of the query)
MAX_STEPS: Final = 10

__all__ = ["MAX_STEPS", "AnalyticsService", "FunnelRow", "FunnelStep", "StepChoice"]


@dataclass(frozen=True)
class FunnelRow:
    """One step of a computed funnel: the sessions that reached it, and the conversion."""

    step: FunnelStep
    sessions: int
    #: sessions here / sessions at the step before (None for the first, or after zero)
    of_previous: float | None
    #: sessions here / sessions at the first step (None if none started)
    of_first: float | None


class AnalyticsService:
    """Funnels and deploy markers for users whose role has ``admin``."""

    def __init__(self, db: DB, access: AccessControl) -> None:
        self.db = db
        self.access = access

    def step_choices(self, actor: Principal, since: datetime, until: datetime) -> list[StepChoice]:
        """The steps recorded in ``[since, until)`` (page views per page, other events by name)."""
        self.access.authorize(actor, OPEN_ADMIN, entity="analytics", entity_id="steps")
        return self._read(lambda uow: EventRepository(uow).step_choices(since, until))

    def funnel(
        self,
        actor: Principal,
        steps: Sequence[FunnelStep],
        since: datetime,
        until: datetime,
    ) -> list[FunnelRow]:
        """How many distinct sessions reached each step, in order, within ``[since, until)``."""
        self.access.authorize(actor, OPEN_ADMIN, entity="analytics", entity_id="funnel")
        if len(steps) > MAX_STEPS:
            raise ValueError(f"a funnel has at most {MAX_STEPS} steps, not {len(steps)}")
        counts = self._read(lambda uow: EventRepository(uow).funnel(steps, since, until))
        return funnel_rows(steps, counts)

    def deployments(
        self, actor: Principal, *, since: datetime | None = None, limit: int = 50
    ) -> list[DeploymentInfo]:
        """Recent deployments, newest first."""
        self.access.authorize(actor, OPEN_ADMIN, entity="analytics", entity_id="deployments")
        return recent_deployments(self.db, since=since, limit=limit)

    def _read(self, fn: Callable[[UnitOfWork], T]) -> T:
        try:
            with self.db.unit_of_work(read_only=True) as uow:
                return fn(uow)
        except DBAPIError as exc:
            raise self.db.translate_final(exc) from exc


def funnel_rows(steps: Sequence[FunnelStep], counts: Sequence[int]) -> list[FunnelRow]:
    """The rows of a funnel from its per-step session counts: conversions added."""
    rows: list[FunnelRow] = []
    first = counts[0] if counts else 0
    previous: int | None = None
    for step, count in zip(steps, counts, strict=True):
        rows.append(
            FunnelRow(
                step,
                count,
                count / previous if previous else None,
                count / first if first else None,
            )
        )
        previous = count
    return rows
