"""Reads of projects for pages, through the cache.

``ProjectRepository`` declares every change to the ``projects`` namespace, so a value cached
here is never served after a committed write (in every app process with the Redis backend).
"""

from __future__ import annotations

from typing import Final

from stalwart.core.cache import Cache, CacheKeys
from stalwart.core.database import DB
from stalwart.repositories import ProjectRepository

#: the per-status overview; bump the version when its shape changes
OVERVIEW_KEY: Final = CacheKeys.key("projects", "project", "overview", version=1)
#: a bound in case a writer outside the repository (a manual SQL fix) changes projects
OVERVIEW_TTL_S: Final = 300.0


def project_overview(db: DB, cache: Cache) -> list[dict[str, object]]:
    """Per status: the number of projects and their budget, from the cache when it has it."""

    def load() -> list[dict[str, object]]:
        with db.unit_of_work(read_only=True) as uow:
            return ProjectRepository(uow).overview()

    return cache.get_or_compute(OVERVIEW_KEY, load, ttl=OVERVIEW_TTL_S)
