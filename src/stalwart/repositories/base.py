"""``Repository[T]``: create/read/update/delete/list for one table, audited, inside a UnitOfWork.

A repository never commits: the UnitOfWork it was given does. Every change it makes records an
audit entry in that same unit of work, so the change and its audit row commit together or not
at all. Tables with a ``version`` column get optimistic concurrency: an update or delete that
names an ``expected_version`` which is no longer current raises ``ConflictError``.

Columns marked ``PII`` or ``SECRET`` (see ``models.base``) are not written to audit diffs in
clear: the diff says only that such a field was set, cleared or changed.

A repository with a ``cache_namespace`` declares every change it makes to the cache
(``uow.invalidates``): after the commit, every cached value of its entity in that namespace
is unreachable. Cache reads of an aggregate are safe exactly when all its writes go through
its repository, which the write path requires anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import inspect, select

from stalwart.core.audit import REDACTED_CHANGED
from stalwart.core.cache import CacheKeys
from stalwart.core.database import UnitOfWork
from stalwart.core.pii import REDACTED
from stalwart.errors import ConflictError, NotFoundError
from stalwart.models import Base
from stalwart.models.base import sensitive_fields

T = TypeVar("T", bound=Base)


class Repository(Generic[T]):
    """Audited CRUD for the table of ``model``."""

    model: ClassVar[type[Any]]
    #: the name audit rows use for this kind of record
    entity: ClassVar[str]
    #: False only for working state that is not business data (drafts, sessions): auditing
    #: every keystroke would bury the changes that matter
    audited: ClassVar[bool] = True
    #: the cache namespace whose ``entity`` values a change makes stale (None: not cached)
    cache_namespace: ClassVar[str | None] = None

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.session = uow.session

    def create(self, **values: Any) -> T:
        """Insert a record and audit it."""
        record: T = self.model(**values)
        self.session.add(record)
        self.session.flush()
        self._audit("create", record, None, snapshot(record))
        return record

    def get(self, record_id: Any) -> T | None:
        """The record with this id, or None."""
        record: T | None = self.session.get(self.model, record_id)
        return record

    def read(self, record_id: Any, *, for_update: bool = False) -> T:
        """The record with this id; ``NotFoundError`` if there is none.

        ``for_update`` locks the row until the transaction ends (PostgreSQL; SQLite's writes
        are serialised already), so a read-modify-write cannot lose a concurrent update.
        """
        record: T | None = self.session.get(self.model, record_id, with_for_update=for_update)
        if record is None:
            raise NotFoundError(f"{self.entity} {record_id} does not exist.")
        return record

    def update(self, record_id: Any, *, expected_version: int | None = None, **changes: Any) -> T:
        """Change fields of a record and audit the diff; bumps ``version`` if it has one."""
        record = self.read(record_id, for_update=True)
        self._check_version(record, expected_version)
        before = snapshot(record)
        unknown = set(changes) - set(before)
        if unknown:
            raise ValueError(f"{self.entity} has no field(s) {sorted(unknown)}")
        managed = set(changes) & {"id", "version"}
        if managed:
            raise ValueError(f"{sorted(managed)} of {self.entity} are managed by the repository")
        for field, value in changes.items():
            setattr(record, field, value)
        self.session.flush()  # bumps ``version`` where the table has one
        after = snapshot(record)
        if after != before:
            self._audit("update", record, before, after)
        return record

    def delete(self, record_id: Any, *, expected_version: int | None = None) -> None:
        """Delete a record and audit what it held."""
        record = self.read(record_id, for_update=True)
        self._check_version(record, expected_version)
        before = snapshot(record)
        self.session.delete(record)
        self.session.flush()
        self._audit("delete", record, before, None)

    def list(
        self,
        *,
        limit: int = 100,
        offset: int = 0,
        order_by: str = "id",
        **filters: Any,
    ) -> Sequence[T]:
        """Records matching ``filters`` (field=value), ordered, one page at a time."""
        column = getattr(self.model, order_by.lstrip("-"))
        query = select(self.model).filter_by(**filters)
        query = query.order_by(column.desc() if order_by.startswith("-") else column)
        return self.session.execute(query.limit(limit).offset(offset)).scalars().all()

    def _audit(
        self, action: str, record: T, before: dict[str, Any] | None, after: dict[str, Any] | None
    ) -> None:
        # Every change passes here, so this is where it is declared to the cache too.
        if self.cache_namespace is not None:
            self.uow.invalidates(CacheKeys.entity(self.cache_namespace, self.entity))
        if self.audited:
            before, after = mask_sensitive(sensitive_fields(self.model), before, after)
            self.uow.audit.record(action, self.entity, self._key(record), before, after)

    def _check_version(self, record: T, expected: int | None) -> None:
        current = getattr(record, "version", None)
        if expected is not None and current is not None and current != expected:
            raise ConflictError(
                f"{self.entity} {self._key(record)} was changed by someone else "
                f"(you edited version {expected}, it is now at version {current})."
            )

    def _key(self, record: T) -> str:
        identity = inspect(record).identity
        return ",".join(str(part) for part in identity) if identity else ""


def snapshot(record: Base) -> dict[str, Any]:
    """The record's column values, by attribute name."""
    mapper = inspect(record).mapper
    return {attr.key: getattr(record, attr.key) for attr in mapper.column_attrs}


def mask_sensitive(
    fields: frozenset[str], before: dict[str, Any] | None, after: dict[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``before``/``after`` with ``fields`` replaced by markers that show only set/cleared/changed.

    None stays None (so setting and clearing show); any other value becomes ``[redacted]``,
    and a changed value ``[redacted, changed]`` after the change (so that the diff keeps it).
    """
    if not fields:
        return before, after
    old = dict(before) if before is not None else None
    new = dict(after) if after is not None else None
    for name in fields:
        b = old.get(name) if old is not None else None
        a = new.get(name) if new is not None else None
        if old is not None and name in old:
            old[name] = None if b is None else REDACTED
        if new is not None and name in new:
            changed = old is not None and b is not None and a != b
            new[name] = None if a is None else (REDACTED_CHANGED if changed else REDACTED)
    return old, new
