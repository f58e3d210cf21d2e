"""Demo data for a fresh install (``app db seed``); safe to run any number of times."""

from __future__ import annotations

from datetime import date

from stalwart.core.database import DB, UnitOfWork
from stalwart.core.logs import get_logger
from stalwart.errors import IntegrityViolationError
from stalwart.repositories import ProjectRepository

log = get_logger(__name__)

DEMO_PROJECTS: tuple[dict[str, object], ...] = (
    {
        "name": "Website relaunch",
        "budget": 48000.0,
        "status": "active",
        "owner": "marketing",
        "due_date": date(2027, 3, 31),
        "description": "New site on the design system.",
    },
    {
        "name": "Warehouse scanners",
        "budget": 12500.0,
        "status": "planned",
        "owner": "logistics",
        "due_date": date(2027, 6, 30),
        "description": "Replace the handheld scanners.",
    },
    {
        "name": "Quarterly close automation",
        "budget": 30000.0,
        "status": "active",
        "owner": "finance",
        "due_date": date(2027, 1, 15),
        "description": "Cut the close from ten days to four.",
    },
    {
        "name": "Support knowledge base",
        "budget": 8000.0,
        "status": "done",
        "owner": "support",
        "due_date": date(2026, 10, 1),
        "description": "Answers for the top 50 tickets.",
    },
)


def seed_demo_data(db: DB) -> int:
    """Insert the demo projects that are missing; returns how many were created."""
    created = 0
    for values in DEMO_PROJECTS:
        name = str(values["name"])

        def add(uow: UnitOfWork, values: dict[str, object] = values) -> bool:
            repo = ProjectRepository(uow)
            if repo.find_by_name(str(values["name"])) is not None:
                return False
            repo.create(**values)
            return True

        try:
            created += db.run_tx(add, user="seed")
        except IntegrityViolationError:
            # A concurrent seed inserted this name between our check and our insert.
            log.info("demo project already present", name=name)
    return created
