"""The sign-in throttle as pure functions: failures counted per key, then growing lockouts.

After ``max_failures`` failures in a row, a key (an account, or a client) is locked for
``lockout_s``; every further failure once the lock has ended locks it again for twice as
long, up to ``lockout_max_s``. A key without a failure for ``window_s`` starts again from
zero. So within any stretch of ``lockout_s`` seconds at most ``max_failures`` failed
attempts are let through (a property test checks this).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Final

_MAX_DOUBLINGS: Final = 40  # 2**40 times any sane lockout is far past any cap


@dataclass(frozen=True)
class ThrottleState:
    """What is known about one key: failures in a row, the last one, and any lock."""

    failures: int = 0
    last_failure_at: datetime | None = None
    locked_until: datetime | None = None


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many failures a key may have, and how long it is locked afterwards."""

    max_failures: int
    lockout_s: float
    lockout_max_s: float
    window_s: float

    def __post_init__(self) -> None:
        if self.max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if not 0 < self.lockout_s <= self.lockout_max_s <= self.window_s:
            raise ValueError("need 0 < lockout_s <= lockout_max_s <= window_s")

    def current(self, state: ThrottleState, now: datetime) -> ThrottleState:
        """``state`` as of ``now``: forgotten once quiet for ``window_s`` and not locked."""
        if self.locked_until(state, now) is not None or state.last_failure_at is None:
            return state
        if now - state.last_failure_at >= timedelta(seconds=self.window_s):
            return ThrottleState()
        return state

    def locked_until(self, state: ThrottleState, now: datetime) -> datetime | None:
        """When the lock on the key ends, if it is locked at ``now``."""
        if state.locked_until is not None and now < state.locked_until:
            return state.locked_until
        return None

    def after_failure(self, state: ThrottleState, now: datetime) -> ThrottleState:
        """The state after one more failure at ``now`` (locking the key if it is one too many)."""
        failures = self.current(state, now).failures + 1
        locked_until = None  # any earlier lock has ended: a locked key is not tried
        if failures >= self.max_failures:
            doublings = min(failures - self.max_failures, _MAX_DOUBLINGS)
            seconds = min(self.lockout_s * 2**doublings, self.lockout_max_s)
            locked_until = now + timedelta(seconds=seconds)
        return ThrottleState(failures, now, locked_until)

    def after_success(self, state: ThrottleState) -> ThrottleState:
        """An account's state after a successful sign-in: clean."""
        return ThrottleState()

    def withdraw_failure(self, state: ThrottleState) -> ThrottleState:
        """Take back one failure counted in advance for an attempt that then succeeded.

        A client's counter is not reset by one success (an attacker may own one account and
        guess others); only the attempt itself is taken back, and the lock with it if the
        failures left are below the limit.
        """
        failures = max(0, state.failures - 1)
        locked_until = state.locked_until if failures >= self.max_failures else None
        return replace(state, failures=failures, locked_until=locked_until)
