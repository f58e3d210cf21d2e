"""Properties of FormState: undo/redo against a reference model, dirty tracking, journal
replay and idempotent writes, for any sequence of operations Hypothesis can think of."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from stalwart.core.form_state import HISTORY_LIMIT, FormState, JournalEntry

FIELDS = ["name", "notes", "budget", "tags"]
values = st.one_of(
    st.text(max_size=5), st.integers(-3, 3), st.none(), st.lists(st.sampled_from("ab"), max_size=2)
)
field_names = st.sampled_from(FIELDS)


class UndoRedoMachine(RuleBasedStateMachine):
    """FormState must behave like a plain list of snapshots with a cursor."""

    def __init__(self) -> None:
        super().__init__()
        start = {"name": "", "notes": "", "budget": 0, "tags": []}
        self.state = FormState.new("f", start, base_version=1)
        self.snapshots: list[dict[str, Any]] = [copy.deepcopy(start)]
        self.cursor = 0
        self.base = copy.deepcopy(start)

    def _push(self, data: dict[str, Any]) -> None:
        del self.snapshots[self.cursor + 1 :]
        self.snapshots.append(copy.deepcopy(data))
        if len(self.snapshots) > HISTORY_LIMIT:
            del self.snapshots[: len(self.snapshots) - HISTORY_LIMIT]
        self.cursor = len(self.snapshots) - 1

    @rule(name=field_names, value=values)
    def set_field(self, name: str, value: Any) -> None:
        expected = dict(self.snapshots[self.cursor], **{name: value})
        changed = self.state.set_field(name, value)
        assert changed == (expected != self.snapshots[self.cursor])
        if changed:
            self._push(expected)

    @rule(changes=st.dictionaries(field_names, values, max_size=3))
    def set_fields(self, changes: dict[str, Any]) -> None:
        expected = dict(self.snapshots[self.cursor], **changes)
        changed = self.state.set_fields(changes)
        assert changed == (expected != self.snapshots[self.cursor])
        if changed:
            self._push(expected)

    @rule()
    def undo(self) -> None:
        before = self.state.data.copy()
        fields = self.state.undo()
        if self.cursor > 0:
            self.cursor -= 1
        after = self.snapshots[self.cursor]
        assert set(fields) == {
            k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
        }

    @rule()
    def redo(self) -> None:
        self.state.redo()
        if self.cursor < len(self.snapshots) - 1:
            self.cursor += 1

    @rule()
    def reset(self) -> None:
        changed = self.state.reset()
        if self.snapshots[self.cursor] != self.base:
            assert changed
            self._push(self.base)
        else:
            assert changed == []

    @precondition(lambda self: self.state.can_undo)
    @rule()
    def undo_then_redo_is_identity(self) -> None:
        before = copy.deepcopy(self.state.data)
        self.state.undo()
        self.state.redo()
        assert self.state.data == before

    @invariant()
    def matches_the_model(self) -> None:
        assert self.state.data == self.snapshots[self.cursor]
        assert self.state.history[self.state.cursor] == self.state.data
        assert self.state.can_undo == (self.cursor > 0)
        assert self.state.can_redo == (self.cursor < len(self.snapshots) - 1)

    @invariant()
    def dirty_means_differs_from_saved(self) -> None:
        differing = sorted(k for k in FIELDS if self.state.data.get(k) != self.base.get(k))
        assert self.state.dirty_fields == differing
        assert self.state.dirty == bool(differing)

    @invariant()
    def survives_json(self) -> None:
        raw = json.loads(json.dumps(self.state.to_json()))
        assert FormState.from_json("f", raw) == self.state


TestUndoRedo = UndoRedoMachine.TestCase
TestUndoRedo.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


@given(st.lists(st.text(max_size=4), min_size=1, max_size=20))
def test_typing_in_one_field_is_one_undo_step(keystrokes: list[str]) -> None:
    state = FormState.new("f", {"name": "", "other": 1})
    text = ""
    for chunk in keystrokes:
        text += chunk
        state.set_field("name", text, typed=True)
    if text:
        assert state.undo() == ["name"]
        assert state.data["name"] == ""
        assert not state.can_undo
    else:
        assert not state.can_undo


@given(field_names, values)
def test_the_same_write_twice_changes_nothing_the_second_time(name: str, value: Any) -> None:
    state = FormState.new("f", {})
    state.set_field(name, value)
    snapshot = copy.deepcopy(state.to_json())
    assert state.set_field(name, value) is False
    assert state.set_fields({name: value}) is False
    assert state.to_json() == snapshot


@given(st.dictionaries(field_names, values, min_size=1))
def test_journal_newer_than_the_server_is_taken_and_replay_is_idempotent(
    typed: dict[str, Any],
) -> None:
    state = FormState.new("f", {"name": "", "notes": "", "budget": 0, "tags": []})
    entries = {k: JournalEntry(v, base=state.revision) for k, v in typed.items()}
    taken = state.merge_journal(entries)
    assert taken == sorted(
        k for k, v in typed.items() if v != {"name": "", "notes": "", "budget": 0, "tags": []}[k]
    )
    for name, value in typed.items():
        assert state.data[name] == value
    snapshot = copy.deepcopy(state.to_json())
    assert state.merge_journal(entries) == []  # the same replay again: nothing changes
    assert state.to_json() == snapshot


@given(values, values)
def test_journal_loses_to_a_later_deliberate_change(typed: Any, after_undo: Any) -> None:
    state = FormState.new("f", {"name": after_undo})
    seen = state.revision  # the browser saw this revision, then the user typed...
    state.set_field("name", typed, typed=True)
    state.undo()  # ...and then undid it on the server: the undo is the newer intent
    assert state.merge_journal({"name": JournalEntry(typed, base=seen)}) == []
    assert state.data["name"] == after_undo


def test_journal_beats_older_typing_from_the_same_browser() -> None:
    state = FormState.new("f", {"notes": ""})
    seen = state.revision
    state.set_field("notes", "hel", typed=True)  # what reached the server before the reload
    assert state.merge_journal({"notes": JournalEntry("hello", base=seen)}) == ["notes"]
    assert state.data["notes"] == "hello"


def test_rebase_after_save_and_taking_theirs() -> None:
    state = FormState.new("f", {"a": 1}, base_version=1)
    state.set_field("a", 2)
    assert state.dirty
    assert state.rebase(2, {"a": 2}) == []  # saved: nothing changes, nothing dirty
    assert not state.dirty
    assert state.base_version == 2
    assert state.rebase(3, {"a": 9}) == ["a"]  # took theirs: one undoable step
    assert state.data == {"a": 9}
    assert not state.dirty
    assert state.undo() == ["a"]
    assert state.data == {"a": 2}


def test_apply_copies_the_draft() -> None:
    state = FormState.new("f", {"a": [1]})
    state.apply()
    state.set_field("a", [1, 2])
    assert state.applied == {"a": [1]}


def test_history_is_bounded() -> None:
    state = FormState.new("f", {"n": 0})
    for i in range(1, HISTORY_LIMIT + 50):
        state.set_field("n", i)
    assert len(state.history) == HISTORY_LIMIT
    while state.can_undo:
        state.undo()
    assert state.data["n"] == 49 + 1
