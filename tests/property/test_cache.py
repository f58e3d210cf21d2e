"""Properties of the cache: keys never collide; LRU, TTL and invalidation follow a model."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart.core.cache import (
    Cache,
    CacheKey,
    CacheKeys,
    MemoryBackend,
    Scope,
    _counter_names,
    _counters,
)

part = st.text(max_size=12)
name = st.text(min_size=1, max_size=12)
keys = st.builds(CacheKey, name, name, part, part)


@given(keys)
def test_a_key_reads_back_as_itself(key: CacheKey) -> None:
    assert CacheKeys.parse(str(key)) == key
    assert str(key).count(":") == 3


@given(keys, keys)
def test_different_keys_never_share_a_text(a: CacheKey, b: CacheKey) -> None:
    assert (str(a) == str(b)) == (a == b)


@given(st.tuples(name, st.none() | name, st.none() | part), keys)
def test_different_scopes_never_share_a_counter_name(raw: tuple, key: CacheKey) -> None:
    ns, entity, id_ = raw
    scope = Scope(ns, entity, id_ if entity is not None else None)
    for other in key.scopes:
        if _counter_names(scope) == _counter_names(other):
            # Only ids of one entity may share a counter (a hashed bucket), never levels.
            assert (scope.namespace, scope.entity) == (other.namespace, other.entity)
            assert (scope.id is None) == (other.id is None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


POOL = [CacheKeys.key(ns, ent, i) for ns in "ab" for ent in "xy" for i in "123"]
scopes = st.one_of(
    st.builds(CacheKeys.namespace, st.sampled_from("ab")),
    st.builds(CacheKeys.entity, st.sampled_from("ab"), st.sampled_from("xy")),
    st.builds(
        CacheKeys.entity, st.sampled_from("ab"), st.sampled_from("xy"), st.sampled_from("123")
    ),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("get"), st.sampled_from(POOL), st.sampled_from([5.0, 20.0])),
        st.tuples(st.just("tick"), st.floats(0, 25, allow_nan=False)),
        st.tuples(st.just("write"), scopes),
        st.tuples(st.just("clear"), st.none() | st.sampled_from("ab")),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops, st.integers(1, 6))
def test_reads_match_an_lru_ttl_model_and_are_never_stale(ops: list, max_entries: int) -> None:
    clock = Clock()
    cache = Cache(MemoryBackend(max_entries=max_entries, max_bytes=10**9, timer=clock))
    truth = dict.fromkeys(POOL, 0)  # the "database": a version per key
    gens: dict[str, int] = {}  # the model's generation counters
    lru: OrderedDict[tuple, float] = OrderedDict()  # (key, gens) -> expiry, oldest first

    def slot(key: CacheKey) -> tuple:
        return (key, tuple(gens.get(c, 0) for c in _counters(key)))

    for op in ops:
        if op[0] == "tick":
            clock.now += op[1]
        elif op[0] == "write":
            scope: Scope = op[1]
            for key in POOL:
                if scope in key.scopes:
                    truth[key] += 1
            cache.invalidate(scope)
            gens[_counter_names(scope)] = gens.get(_counter_names(scope), 0) + 1
        elif op[0] == "clear":
            cache.clear(op[1])
            counter = "g0" if op[1] is None else _counter_names(Scope(op[1]))
            gens[counter] = gens.get(counter, 0) + 1
            for s in [s for s in lru if op[1] is None or s[0].namespace == op[1]]:
                del lru[s]
        else:
            _, key, ttl = op
            calls = []
            got = cache.get_or_compute(key, lambda k=key: calls.append(1) or truth[k], ttl=ttl)
            assert got == truth[key], "a stale value was served"
            s = slot(key)
            expected_hit = s in lru and clock.now < lru[s]
            assert (not calls) == expected_hit
            if expected_hit:
                lru.move_to_end(s)
            else:
                for dead in [d for d, exp in lru.items() if not clock.now < exp]:
                    del lru[dead]
                lru.pop(s, None)
                while len(lru) >= max_entries:
                    lru.popitem(last=False)
                lru[s] = clock.now + ttl
    assert cache.stats().entries == sum(1 for exp in lru.values() if clock.now < exp)
