"""FormState: a form's draft values, undo/redo history, dirty tracking and journal replay.

Pure state, no I/O and no Streamlit: the form service loads it from the draft row, applies one
operation under a row lock and writes it back; the widgets render it. Every operation that
changes ``data`` is one undo step (consecutive typing into one field is coalesced into one).

Revisions: each change bumps ``revision`` and stamps the changed fields with it. The browser's
journal records the revision it had seen when the user typed; on replay after a reload an
entry wins unless the server changed that field *by another operation* (undo, reset, taking
the other side of a conflict) after that revision.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

HISTORY_LIMIT: Final = 100

Origin = Literal["typed", "op"]


@dataclass(frozen=True)
class JournalEntry:
    """A value the browser journalled: what was typed and the revision it had seen."""

    value: Any
    base: int


@dataclass
class FormState:
    """The state of one form for one browser identity."""

    form_id: str
    data: dict[str, Any]
    base_version: int = 0
    base_data: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    cursor: int = 0
    applied: dict[str, Any] | None = None
    revision: int = 0
    field_revisions: dict[str, int] = field(default_factory=dict)
    field_origins: dict[str, Origin] = field(default_factory=dict)
    coalescing: str | None = None

    def __post_init__(self) -> None:
        if not self.history:
            self.history = [copy.deepcopy(self.data)]
            self.cursor = 0

    @classmethod
    def new(cls, form_id: str, data: Mapping[str, Any], base_version: int = 0) -> FormState:
        """A fresh state whose draft equals ``data`` (the saved version, or the defaults)."""
        return cls(
            form_id=form_id,
            data=copy.deepcopy(dict(data)),
            base_version=base_version,
            base_data=copy.deepcopy(dict(data)),
        )

    # --- changing values ----------------------------------------------------------------

    def set_field(self, name: str, value: Any, *, typed: bool = False) -> bool:
        """Set one field; ``typed`` changes to the same field in a row are one undo step."""
        if self.data.get(name) == value and name in self.data:
            return False
        coalesce = typed and self.coalescing == name and self.cursor == len(self.history) - 1
        self.data[name] = copy.deepcopy(value)
        self._stamp([name], "typed" if typed else "op")
        if coalesce:
            self.history[self.cursor] = copy.deepcopy(self.data)
        else:
            self._push()
        self.coalescing = name if typed else None
        return True

    def set_fields(self, values: Mapping[str, Any]) -> bool:
        """Set several fields as one undo step."""
        changed = [k for k, v in values.items() if k not in self.data or self.data[k] != v]
        if not changed:
            return False
        for name in changed:
            self.data[name] = copy.deepcopy(values[name])
        self._stamp(changed, "op")
        self._push()
        self.coalescing = None
        return True

    def undo(self) -> list[str]:
        """Step back one change; returns the fields whose values changed."""
        if not self.can_undo:
            return []
        return self._move_to(self.cursor - 1)

    def redo(self) -> list[str]:
        """Step forward one undone change; returns the fields whose values changed."""
        if not self.can_redo:
            return []
        return self._move_to(self.cursor + 1)

    @property
    def can_undo(self) -> bool:
        """True if there is a change to undo."""
        return self.cursor > 0

    @property
    def can_redo(self) -> bool:
        """True if there is an undone change to redo."""
        return self.cursor < len(self.history) - 1

    def reset(self) -> list[str]:
        """Back to the saved version this draft is based on (an undoable step)."""
        target = copy.deepcopy(self.base_data)
        changed = sorted(
            k for k in self.data.keys() | target.keys() if self.data.get(k) != target.get(k)
        )
        if not changed:
            return []
        self.data = target
        self._stamp(changed, "op")
        self._push()
        self.coalescing = None
        return changed

    def apply(self) -> None:
        """Push the draft into the page's computation."""
        self.applied = copy.deepcopy(self.data)

    def rebase(self, version: int, data: Mapping[str, Any]) -> list[str]:
        """Make ``version`` (with ``data``) the saved base; the draft becomes ``data``.

        Used after a save (data is the draft: nothing changes) and to take the other side of a
        conflict (data is theirs: one undoable step).
        """
        self.base_version = version
        self.base_data = copy.deepcopy(dict(data))
        changed = sorted(
            k for k in self.data.keys() | data.keys() if self.data.get(k) != data.get(k)
        )
        if changed:
            self.data = copy.deepcopy(dict(data))
            self._stamp(changed, "op")
            self._push()
            self.coalescing = None
        return changed

    def merge_journal(self, entries: Mapping[str, JournalEntry]) -> list[str]:
        """Replay values the browser journalled; returns the fields that took them."""
        taken: dict[str, Any] = {}
        for name, entry in entries.items():
            if self.data.get(name) == entry.value:
                continue
            changed_after = self.field_revisions.get(name, 0) > entry.base
            if changed_after and self.field_origins.get(name) == "op":
                continue  # undone, reset or replaced on purpose since: the journal is stale
            taken[name] = entry.value
        if not taken:
            return []
        for name, value in taken.items():
            self.data[name] = copy.deepcopy(value)
        self._stamp(list(taken), "typed")
        self._push()
        self.coalescing = None
        return sorted(taken)

    # --- what the UI asks ----------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """True when the draft differs from the saved version it is based on."""
        return self.data != self.base_data

    @property
    def dirty_fields(self) -> list[str]:
        """The fields whose draft value differs from the saved base."""
        names = self.data.keys() | self.base_data.keys()
        return sorted(n for n in names if self.data.get(n) != self.base_data.get(n))

    # --- serialisation -------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole state."""
        return {
            "data": self.data,
            "base_version": self.base_version,
            "base_data": self.base_data,
            "history": self.history,
            "cursor": self.cursor,
            "applied": self.applied,
            "revision": self.revision,
            "field_revisions": self.field_revisions,
            "field_origins": self.field_origins,
            "coalescing": self.coalescing,
        }

    @classmethod
    def from_json(cls, form_id: str, raw: Mapping[str, Any]) -> FormState:
        """The state ``to_json`` wrote."""
        return cls(
            form_id=form_id,
            data=dict(raw["data"]),
            base_version=int(raw.get("base_version", 0)),
            base_data=dict(raw.get("base_data", {})),
            history=[dict(h) for h in raw.get("history", [])],
            cursor=int(raw.get("cursor", 0)),
            applied=raw.get("applied"),
            revision=int(raw.get("revision", 0)),
            field_revisions={k: int(v) for k, v in raw.get("field_revisions", {}).items()},
            field_origins=dict(raw.get("field_origins", {})),
            coalescing=raw.get("coalescing"),
        )

    # --- internals -----------------------------------------------------------------------

    def _stamp(self, names: list[str], origin: Origin) -> None:
        self.revision += 1
        for name in names:
            self.field_revisions[name] = self.revision
            self.field_origins[name] = origin

    def _push(self) -> None:
        del self.history[self.cursor + 1 :]  # a new change drops the redo branch
        self.history.append(copy.deepcopy(self.data))
        if len(self.history) > HISTORY_LIMIT:
            del self.history[: len(self.history) - HISTORY_LIMIT]
        self.cursor = len(self.history) - 1

    def _move_to(self, index: int) -> list[str]:
        target = self.history[index]
        changed = sorted(
            k for k in self.data.keys() | target.keys() if self.data.get(k) != target.get(k)
        )
        self.cursor = index
        self.data = copy.deepcopy(target)
        if changed:
            self._stamp(changed, "op")
        self.coalescing = None
        return changed
