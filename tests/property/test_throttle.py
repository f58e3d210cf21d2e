"""The sign-in throttle never lets more than ``max_failures`` wrong guesses through per lockout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stalwart.core.throttle import ThrottlePolicy, ThrottleState

START = datetime(2026, 1, 1, tzinfo=UTC)

policies = st.builds(
    lambda n, lock, growth, extra: ThrottlePolicy(n, lock, lock * growth, lock * growth + extra),
    st.integers(min_value=1, max_value=8),
    st.floats(min_value=1.0, max_value=600.0),
    st.sampled_from([1, 2, 4, 64]),
    st.floats(min_value=0.0, max_value=3600.0),
)
#: gaps between an attacker's attempts, in seconds (many fast ones, some long pauses)
gaps = st.lists(
    st.one_of(st.floats(min_value=0.0, max_value=5.0), st.floats(min_value=0.0, max_value=5000.0)),
    max_size=80,
)


def attack(policy: ThrottlePolicy, pauses: list[float]) -> list[datetime]:
    """Wrong guesses at the given gaps; returns when a guess was let through (checked)."""
    state, now, admitted = ThrottleState(), START, []
    for pause in pauses:
        now += timedelta(seconds=pause)
        state = policy.current(state, now)
        if policy.locked_until(state, now) is not None:
            continue  # refused without checking the password
        state = policy.after_failure(state, now)
        admitted.append(now)
    return admitted


@given(policies, gaps)
def test_at_most_max_failures_per_lockout_period(
    policy: ThrottlePolicy, pauses: list[float]
) -> None:
    admitted = attack(policy, pauses)
    period = timedelta(seconds=policy.lockout_s)
    for i, first in enumerate(admitted):
        within = [t for t in admitted[i:] if t < first + period]
        assert len(within) <= policy.max_failures


@given(policies, gaps)
def test_each_lock_of_a_streak_is_at_least_as_long_as_the_one_before(
    policy: ThrottlePolicy, pauses: list[float]
) -> None:
    state, now, previous = ThrottleState(), START, 0.0
    for pause in pauses:
        now += timedelta(seconds=pause)
        state = policy.current(state, now)
        if state.failures == 0:
            previous = 0.0  # forgotten: a new streak
        if policy.locked_until(state, now) is not None:
            continue
        state = policy.after_failure(state, now)
        if state.failures >= policy.max_failures:
            assert state.locked_until is not None
            length = (state.locked_until - now).total_seconds()
            assert policy.lockout_s - 1e-5 <= length <= policy.lockout_max_s + 1e-5
            assert length >= previous - 1e-5
            previous = length


def test_lock_doubles_up_to_the_cap_and_is_forgotten_after_the_window() -> None:
    policy = ThrottlePolicy(3, 60.0, 200.0, 1000.0)
    state, now = ThrottleState(), START
    for _ in range(3):
        state = policy.after_failure(state, now)
    assert state.locked_until == now + timedelta(seconds=60)
    lengths = []
    for _ in range(3):
        assert state.locked_until is not None
        now = state.locked_until
        state = policy.after_failure(state, now)
        assert state.locked_until is not None
        lengths.append((state.locked_until - now).total_seconds())
    assert lengths == [120.0, 200.0, 200.0]
    assert policy.current(state, now + timedelta(seconds=999)) == state  # still within window
    assert policy.current(state, now + timedelta(seconds=1000)) == ThrottleState()


def test_a_withdrawn_failure_lifts_the_lock_it_caused() -> None:
    policy = ThrottlePolicy(2, 60.0, 60.0, 600.0)
    one = policy.after_failure(ThrottleState(), START)
    two = policy.after_failure(one, START)
    assert policy.locked_until(two, START) is not None
    back = policy.withdraw_failure(two)
    assert (back.failures, back.locked_until) == (1, None)
    three = policy.after_failure(two, START + timedelta(seconds=60))
    assert policy.withdraw_failure(three).locked_until == three.locked_until
    assert policy.after_success(three) == ThrottleState()


@pytest.mark.parametrize(
    "args", [(0, 1.0, 1.0, 1.0), (1, 0.0, 1.0, 1.0), (1, 2.0, 1.0, 5.0), (1, 1.0, 5.0, 2.0)]
)
def test_inconsistent_policies_are_refused(args: tuple[int, float, float, float]) -> None:
    with pytest.raises(ValueError):
        ThrottlePolicy(*args)
