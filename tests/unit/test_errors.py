"""Every Stalwart error carries a message and a suggested action."""

from __future__ import annotations

import pytest

from stalwart import errors


@pytest.mark.parametrize(
    "cls",
    [
        c
        for c in vars(errors).values()
        if isinstance(c, type) and issubclass(c, errors.StalwartError)
    ],
)
def test_each_error_has_a_default_action(cls: type[errors.StalwartError]) -> None:
    err = cls("what happened")
    assert err.message == "what happened"
    assert err.action
    assert err.action.endswith(".")
    assert str(err) == f"what happened -> {err.action}"


def test_transient_errors_say_their_kind() -> None:
    assert errors.TransientDatabaseError("x", kind="deadlock").kind == "deadlock"
