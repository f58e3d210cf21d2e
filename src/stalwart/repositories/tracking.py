"""Events and deployments: the queries behind funnels and deploy markers.

Neither table is audited: events are themselves a record of what happened, and a deployment
is written by the system at start-up, not changed by anyone. Events are inserted by
``core.tracking`` in batches (write-behind), not through ``create``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from stalwart.core.tracking import PAGE_VIEW
from stalwart.models import Deployment, Event
from stalwart.repositories.base import Repository


@dataclass(frozen=True)
class FunnelStep:
    """One step of a funnel: an event name, and for page views the page (None: any page)."""

    name: str
    page: str | None = None

    @property
    def label(self) -> str:
        """How the step is named to people: ``page.view · form-demo``."""
        return self.name if self.page is None else f"{self.name} · {self.page}"


@dataclass(frozen=True)
class StepChoice:
    """A step that occurred in a window, with how many sessions reached it (in any order)."""

    step: FunnelStep
    events: int
    sessions: int


class EventRepository(Repository[Event]):
    """Reads of the events table: what happened, and funnels over it."""

    model = Event
    entity = "event"
    audited = False

    def funnel(self, steps: Sequence[FunnelStep], since: datetime, until: datetime) -> list[int]:
        """For each step, how many distinct sessions reached it after all the steps before it.

        A session reaches step 1 with its first matching event in ``[since, until)``, and step
        *k* with its first matching event strictly after the time it reached step *k-1*
        (taking the earliest each time is what lets the most sessions go on). Events without
        a session are not counted. One query (a chain of CTEs), on SQLite and PostgreSQL.
        """
        if not steps:
            return []
        reached = []
        previous = None
        for index, step in enumerate(steps):
            ev = Event.__table__.alias(f"e{index}")
            conditions = [
                ev.c.name == step.name,
                ev.c.ts >= since,
                ev.c.ts < until,
                ev.c.session.is_not(None),
            ]
            if step.page is not None:
                conditions.append(ev.c.page == step.page)
            query = select(ev.c.session.label("session"), func.min(ev.c.ts).label("ts"))
            if previous is not None:
                query = query.join(previous, previous.c.session == ev.c.session)
                conditions.append(ev.c.ts > previous.c.ts)
            previous = query.where(*conditions).group_by(ev.c.session).cte(f"step{index}")
            reached.append(previous)
        counts = [select(func.count()).select_from(cte).scalar_subquery() for cte in reached]
        row = self.session.execute(select(*counts)).one()
        return [int(count) for count in row]

    def step_choices(self, since: datetime, until: datetime) -> list[StepChoice]:
        """The steps a funnel can use in ``[since, until)``: page views per page, other events
        by name; each with its number of events and of distinct sessions."""
        window = (Event.ts >= since, Event.ts < until)
        per_page = self.session.execute(
            select(Event.page, func.count(), func.count(func.distinct(Event.session)))
            .where(Event.name == PAGE_VIEW, *window)
            .group_by(Event.page)
            .order_by(Event.page)
        ).all()
        per_name = self.session.execute(
            select(Event.name, func.count(), func.count(func.distinct(Event.session)))
            .where(Event.name != PAGE_VIEW, *window)
            .group_by(Event.name)
            .order_by(Event.name)
        ).all()
        return [
            StepChoice(FunnelStep(PAGE_VIEW, page), int(n), int(s)) for page, n, s in per_page
        ] + [StepChoice(FunnelStep(name), int(n), int(s)) for name, n, s in per_name]


class DeploymentRepository(Repository[Deployment]):
    """Deploy markers: one row per app process start."""

    model = Deployment
    entity = "deployment"
    audited = False

    def recent(self, *, since: datetime | None = None, limit: int = 50) -> list[Deployment]:
        """Deployments started at or after ``since`` (all if None), newest first."""
        query = select(Deployment)
        if since is not None:
            query = query.where(Deployment.started_at >= since)
        query = query.order_by(Deployment.started_at.desc(), Deployment.id.desc()).limit(limit)
        return list(self.session.execute(query).scalars())
