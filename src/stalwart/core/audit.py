"""The audit log: every data change leaves a row, in the same transaction as the change.

Rows are append-only (database triggers refuse UPDATE and DELETE) and hash-chained: each row's
hash covers its content and the previous row's hash, so editing, removing or inserting a row
anywhere breaks the chain from that point on, and ``verify_chain`` names the first broken link.

An audit row is a log kept for good, so its diff is masked like a log line (``core.pii``):
fields named as personal data or secrets (``email``, ``password``, columns marked ``PII`` or
``SECRET``) show only whether they were set, cleared or changed, and e-mail addresses, phone
numbers and IBANs in any other value (a form's free text, say) become ``[email]``,
``[phone]``, ``[iban]``. Markers, not pseudonyms: a row outlives any key that could be leaked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from stalwart.core.pii import REDACTED, PIIMasker
from stalwart.models import AuditEntry
from stalwart.models.base import marked_fields, utcnow

if TYPE_CHECKING:
    from stalwart.core.database import UnitOfWork

GENESIS_HASH: Final = "0" * 64
# Serialises appends to the chain on PostgreSQL (SQLite writes are serialised already).
_PG_CHAIN_LOCK: Final = 0x5354_4C57_4155_4454  # "STLWAUDT"
#: what a diff shows, after a change, of a personal or secret value that was set before
REDACTED_CHANGED: Final = "[redacted, changed]"


@dataclass(frozen=True)
class PendingEntry:
    """An audit row waiting for its transaction's commit."""

    ts: datetime
    action: str
    entity: str
    entity_id: str
    diff: dict[str, Any]


@dataclass(frozen=True)
class ChainReport:
    """What ``verify_chain`` found."""

    checked: int
    first_broken_id: int | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when every link holds."""
        return self.first_broken_id is None


class AuditLog:
    """The audit log of one UnitOfWork: ``record()`` now, rows written at commit."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow
        self._pending: list[PendingEntry] = []

    def record(
        self,
        action: str,
        entity: str,
        entity_id: object,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> None:
        """Note a change of ``entity``/``entity_id`` from ``before`` to ``after``."""
        diff = mask_diff(diff_states(before, after))
        self._pending.append(PendingEntry(utcnow(), action, entity, str(entity_id), diff))

    def write_pending(self) -> None:
        """Append the noted rows to the chain (called by ``UnitOfWork.commit``)."""
        if not self._pending:
            return
        session = self._uow.session
        if self._uow.db.dialect == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_CHAIN_LOCK})
        prev = session.execute(
            select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)
        ).scalar_one_or_none()
        prev_hash = prev or GENESIS_HASH
        for entry in self._pending:
            row = AuditEntry(
                ts=entry.ts,
                actor=self._uow.user,
                action=entry.action,
                entity=entry.entity,
                entity_id=entry.entity_id,
                diff=entry.diff,
                trace_id=self._uow.trace_id,
                prev_hash=prev_hash,
            )
            row.hash = entry_hash(row)
            session.add(row)
            prev_hash = row.hash
        session.flush()
        self._pending.clear()

    def discard_pending(self) -> None:
        """Forget the noted rows (the transaction rolled back)."""
        self._pending.clear()


def diff_states(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``{field: {"before": old, "after": new}}`` for each field that changed, as JSON values."""
    old = dict(before or {})
    new = dict(after or {})
    changed = {}
    for field in sorted(old.keys() | new.keys()):
        b, a = _jsonable(old.get(field)), _jsonable(new.get(field))
        if b != a or (field not in old) != (field not in new):
            changed[field] = {"before": b, "after": a}
    return changed


def mask_diff(diff: Mapping[str, Any]) -> dict[str, Any]:
    """``diff`` (from ``diff_states``) with personal data and secrets hidden (see module doc).

    A field stays in the diff even where both sides mask alike (``[email]`` to ``[email]``):
    that it changed is what the audit must keep.
    """
    masker = _diff_masker()
    masked = {}
    for field, change in diff.items():
        before, after = change["before"], change["after"]
        if masker.key_kind(field) is None:
            masked[field] = {"before": masker.value(before), "after": masker.value(after)}
        else:
            shown = REDACTED_CHANGED if before is not None else REDACTED
            masked[field] = {
                "before": None if before is None else REDACTED,
                "after": None if after is None else shown,
            }
    return masked


@cache
def _diff_masker() -> PIIMasker:
    # Built at first use: by then every model (and its marked columns) is imported.
    pii, secret = marked_fields()
    return PIIMasker("mask", pii_keys=pii, secret_keys=secret)


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        # The audit says what changed, not the content: size and digest identify it.
        raw = bytes(value)
        return {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def entry_hash(row: AuditEntry) -> str:
    """The SHA-256 that links ``row`` to the chain: its content plus the previous hash."""
    ts = row.ts if row.ts.tzinfo else row.ts.replace(tzinfo=UTC)
    payload = {
        "prev": row.prev_hash,
        "ts": ts.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": row.actor,
        "action": row.action,
        "entity": row.entity,
        "entity_id": row.entity_id,
        "diff": row.diff,
        "trace_id": row.trace_id,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def verify_chain(conn: Connection, *, batch: int = 1000) -> ChainReport:
    """Walk the audit log in order and report the first row whose link does not hold."""
    prev_hash = GENESIS_HASH
    checked = 0
    last_id = 0
    session = Session(bind=conn)
    while True:
        query = select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id)
        rows = session.execute(query.limit(batch)).scalars().all()
        session.expunge_all()
        if not rows:
            return ChainReport(checked)
        for row in rows:
            if row.prev_hash != prev_hash:
                return ChainReport(
                    checked,
                    row.id,
                    "its prev_hash does not match the row before it "
                    "(a row was removed, inserted or edited before it)",
                )
            if entry_hash(row) != row.hash:
                return ChainReport(checked, row.id, "its content does not match its hash (edited)")
            prev_hash = row.hash
            checked += 1
            last_id = row.id
