"""The cache: namespaced keys, ``get_or_compute`` and invalidation through generations.

A ``CacheKey`` names a value as ``namespace:entity:id:version``; each part is
percent-escaped, so the text of two different keys never collides. A write declares the
``Scope`` s it changes (``uow.invalidates(...)``); after the commit the cache bumps the
generation counter of each scope. Every stored value is filed under its key *and* the
generations in force when its computation started (global, namespace, entity, entity id), so
a bump makes every older entry unreachable at once, in every process that reads the same
counters, and a computation that raced the write stores its (possibly stale) result where
nobody will look. Old entries are not hunted down; they age out by LRU and TTL.

Per-id counters are hashed into ``ID_BUCKETS`` buckets per (namespace, entity), so the number
of counters is bounded by the code, not by the data; two ids sharing a bucket only cost an
extra miss.

Two backends hold the values and the counters:

- ``MemoryBackend`` (default): a cachetools ``TLRUCache`` in this process (LRU with a TTL per
  entry), bounded in entries and in bytes. Invalidation reaches this process only, so it
  suits one app process.
- ``RedisBackend``: values (JSON, with a TTL) and counters in Redis, shared by every app
  process; a lookup is one round trip (a Lua script reads the counters and the value). In
  front of it sits an in-process tier (on by default): values this process has read stay in
  its memory with the generations they were filed under, and the lookup script returns the
  value only when those generations are no longer current. The counters are read from Redis
  on every lookup, so the local tier never serves a value another process has invalidated;
  it saves the transfer and the JSON decoding of values, not the round trip.

Values must be JSON (dicts, lists, strings, numbers, booleans, None) with either backend, so
that what works on a laptop works with Redis, and so that a shared Redis never hands a
process something to unpickle. The JSON length is also how an entry's size is counted.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar
from urllib.parse import quote, unquote

from cachetools import TLRUCache

from stalwart.core.logs import get_logger
from stalwart.errors import StalwartError

if TYPE_CHECKING:
    from redis import Redis

    from stalwart.core.config import AppConfig

T = TypeVar("T")
log = get_logger(__name__)

#: Per-id invalidation counters per (namespace, entity).
ID_BUCKETS: Final = 1024
#: Bytes counted for an entry on top of its JSON: the key and the bookkeeping around it.
ENTRY_OVERHEAD: Final = 200
#: The longest TTL a value may have (a day); a cache is not a database.
MAX_TTL_S: Final = 86_400.0


class CacheError(StalwartError):
    """A value cannot be cached, or a key is malformed."""

    default_action = "Cache JSON values only (e.g. a pydantic model's model_dump(mode='json'))."


def _escape(part: str) -> str:
    # Everything but letters, digits and "_.-~" is escaped, ":" and "%" included, so the
    # escaped parts joined by ":" can be split back unambiguously.
    return quote(part, safe="")


@dataclass(frozen=True)
class Scope:
    """What a write invalidates: a namespace, one entity type in it, or one entity."""

    namespace: str
    entity: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        if not self.namespace:
            raise CacheError("A cache namespace must not be empty.")
        if self.id is not None and self.entity is None:
            raise CacheError("A cache scope with an id needs its entity.")

    def __str__(self) -> str:
        parts = [self.namespace, self.entity, self.id]
        return ":".join(_escape(p) for p in parts if p is not None)


@dataclass(frozen=True)
class CacheKey:
    """The name of one cached value: ``namespace:entity:id:version``."""

    namespace: str
    entity: str
    id: str
    version: str

    def __post_init__(self) -> None:
        if not self.namespace or not self.entity:
            raise CacheError("A cache key needs a namespace and an entity.")

    def __str__(self) -> str:
        parts = (self.namespace, self.entity, self.id, self.version)
        return ":".join(_escape(p) for p in parts)

    @property
    def scopes(self) -> tuple[Scope, Scope, Scope]:
        """The scopes whose invalidation reaches this key, widest first."""
        return (
            Scope(self.namespace),
            Scope(self.namespace, self.entity),
            Scope(self.namespace, self.entity, self.id),
        )


class CacheKeys:
    """Builds keys and scopes; the only way Stalwart names cached things."""

    @staticmethod
    def key(namespace: str, entity: str, id: object = "", version: object = 1) -> CacheKey:
        """The key of one value; ``version`` changes when the cached value's shape does."""
        return CacheKey(namespace, entity, str(id), str(version))

    @staticmethod
    def parse(text: str) -> CacheKey:
        """The key whose ``str()`` is ``text``."""
        parts = text.split(":")
        if len(parts) != 4:
            raise CacheError(f"Not a cache key (namespace:entity:id:version): {text!r}")
        namespace, entity, id_, version = (unquote(p) for p in parts)
        return CacheKey(namespace, entity, id_, version)

    @staticmethod
    def namespace(namespace: str) -> Scope:
        """Everything in ``namespace``."""
        return Scope(namespace)

    @staticmethod
    def entity(namespace: str, entity: str, id: object | None = None) -> Scope:
        """Every key of ``entity`` in ``namespace``, or only those of the entity ``id``."""
        return Scope(namespace, entity, None if id is None else str(id))


def _bucket(scope: Scope) -> int:
    # A stable hash (Python's hash() differs between processes).
    digest = hashlib.blake2b(str(scope).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % ID_BUCKETS


def _counter_names(scope: Scope) -> str:
    """The name of the generation counter a scope bumps (the global one is ``g0``)."""
    ns = _escape(scope.namespace)
    if scope.entity is None:
        return f"g1:{ns}"
    if scope.id is None:
        return f"g2:{ns}:{_escape(scope.entity)}"
    return f"g3:{ns}:{_escape(scope.entity)}:{_bucket(scope)}"


def _counters(key: CacheKey) -> tuple[str, str, str, str]:
    ns, ent, one = key.scopes
    return ("g0", _counter_names(ns), _counter_names(ent), _counter_names(one))


Generations = tuple[int, int, int, int]


def encode(key: CacheKey, value: object) -> bytes:
    """``value`` as compact JSON, or a ``CacheError`` that names the key and the problem."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise CacheError(
            f"The value for cache key {key} is not JSON ({type(value).__name__}): {exc}"
        ) from exc


@dataclass
class CacheStats:
    """Counters of one process; ``entries``, ``bytes``, evictions: this process's memory."""

    backend: str
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expirations: int = 0
    invalidations: int = 0
    errors: int = 0
    entries: int = 0
    bytes: int = 0
    #: redis: hits the in-process tier answered without the value crossing the network
    local_hits: int = 0

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups (0 before the first lookup)."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


class CacheBackend(Protocol):
    """Where values and generation counters live."""

    name: str

    def lookup(self, key: CacheKey) -> tuple[Generations, bool, Any]:
        """The generations in force for ``key``, and the value filed under them if any."""

    def generations(self, key: CacheKey) -> Generations:
        """The generations in force for ``key``."""

    def store(self, key: CacheKey, gens: Generations, value: Any, raw: bytes, ttl: float) -> None:
        """File ``value`` (``raw`` is its JSON) under ``key`` and ``gens`` for ``ttl`` s."""

    def bump(self, counters: Iterable[str]) -> None:
        """Increment each named generation counter."""

    def drop(self, namespace: str | None) -> None:
        """Free the memory of entries in ``namespace`` (all if None); counters stay."""

    def fill(self, stats: CacheStats) -> None:
        """Add what this process's part of the backend knows (size, evictions) to ``stats``."""

    def shared(self) -> dict[str, int]:
        """What every process shares: counters and size on the server (empty for memory)."""

    def ping(self) -> None:
        """Raise unless the backend answers (the readiness check)."""

    def close(self) -> None:
        """Release connections."""


@dataclass(frozen=True)
class _Entry:
    value: Any
    ttl: float
    size: int
    #: the local tier of RedisBackend: Redis's epoch and the generations the value is filed
    #: under there, as the lookup script compares them
    tag: str | None = None


class _BoundedTLRU(TLRUCache[Any, _Entry]):
    """A TLRUCache with a bound on entries as well as bytes, counting what leaves it."""

    def __init__(self, max_entries: int, max_bytes: int, timer: Callable[[], float]) -> None:
        super().__init__(
            max_bytes,
            lambda _k, entry, now: now + entry.ttl,
            timer=timer,
            getsizeof=lambda entry: entry.size,
        )
        self.max_entries = max_entries
        self.evictions = 0
        self.expirations = 0

    def __setitem__(self, key: Any, value: _Entry) -> None:
        if key not in self:
            self.expire()
            while len(self) >= self.max_entries:
                self.popitem()
        super().__setitem__(key, value)

    def popitem(self) -> tuple[Any, _Entry]:
        item = super().popitem()
        self.evictions += 1
        return item

    def expire(self, time: float | None = None) -> list[tuple[Any, _Entry]]:
        expired = list(super().expire(time))
        self.expirations += len(expired)
        return expired


class MemoryBackend:
    """Values and counters in this process: LRU with a TTL per entry, bounded twice."""

    name = "memory"

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._data = _BoundedTLRU(max_entries, max_bytes, timer)
        self._gens: dict[str, int] = {}

    def lookup(self, key: CacheKey) -> tuple[Generations, bool, Any]:
        with self._lock:
            gens = self._generations(key)
            entry = self._data.get((key, gens))
        return gens, entry is not None, entry.value if entry is not None else None

    def generations(self, key: CacheKey) -> Generations:
        with self._lock:
            return self._generations(key)

    def _generations(self, key: CacheKey) -> Generations:
        g0, g1, g2, g3 = (self._gens.get(c, 0) for c in _counters(key))
        return (g0, g1, g2, g3)

    def store(self, key: CacheKey, gens: Generations, value: Any, raw: bytes, ttl: float) -> None:
        size = len(raw) + len(str(key)) + ENTRY_OVERHEAD
        with self._lock:
            try:
                self._data[(key, gens)] = _Entry(value, ttl, size)
            except ValueError:  # larger than the whole cache: serve it, do not keep it
                log.warning("cache value too large to keep", key=str(key), bytes=size)

    def bump(self, counters: Iterable[str]) -> None:
        with self._lock:
            for name in counters:
                self._gens[name] = self._gens.get(name, 0) + 1

    def drop(self, namespace: str | None) -> None:
        with self._lock:
            if namespace is None:
                self._data.clear()
                return
            for k in [k for k in self._data if k[0].namespace == namespace]:
                del self._data[k]

    def fill(self, stats: CacheStats) -> None:
        with self._lock:
            self._data.expire()
            stats.entries = len(self._data)
            stats.bytes = int(self._data.currsize)
            stats.evictions = self._data.evictions
            stats.expirations = self._data.expirations

    def shared(self) -> dict[str, int]:
        return {}

    def ping(self) -> None:
        """Always answers: it is this process's memory."""

    def close(self) -> None:
        """Nothing to release."""


# One round trip for a lookup: read the four generation counters, then the value filed under
# them, and count the hit or miss in the shared stats hash. The epoch (KEYS[6], made from
# ARGV[4] when missing) is a random name of this Redis's counters: if Redis loses them (a
# restart without persistence), counting starts again from 0 under a new epoch, so a local
# copy filed under the old counters can never match again. ARGV[3] is the epoch and
# generations under which the local tier holds the value ("" if it does not): when they are
# still current, the value is not sent again. The reply: the four generations, the value (or
# nil), whether the local copy is current (1/0), the value's remaining time to live in ms, and
# the epoch.
_LOOKUP_LUA = """
local gens = redis.call('MGET', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
for i = 1, 4 do gens[i] = tonumber(gens[i]) or 0 end
local epoch = redis.call('GET', KEYS[6])
if not epoch then
    redis.call('SET', KEYS[6], ARGV[4], 'NX')
    epoch = redis.call('GET', KEYS[6])
end
local tag = table.concat(gens, '.')
if ARGV[3] ~= '' and ARGV[3] == epoch .. '/' .. tag then
    redis.call('HINCRBY', KEYS[5], 'hits', 1)
    return {gens[1], gens[2], gens[3], gens[4], false, 1, 0, epoch}
end
local vkey = ARGV[1] .. 'v:' .. ARGV[2] .. '@' .. tag
local value = redis.call('GET', vkey)
redis.call('HINCRBY', KEYS[5], value and 'hits' or 'misses', 1)
local pttl = 0
if value then pttl = redis.call('PTTL', vkey) end
return {gens[1], gens[2], gens[3], gens[4], value, 0, pttl, epoch}
"""


def _tag(gens: Generations) -> str:
    return ".".join(map(str, gens))


class RedisBackend:
    """Values (JSON, each with a TTL) and generation counters in Redis, shared by processes.

    Counters have no TTL and values all have one: run Redis with
    ``maxmemory-policy volatile-lru`` (or ``volatile-ttl``) so that memory pressure evicts
    values, never a counter (a lost counter could bring back an older value).
    Not for Redis Cluster: the lookup script builds the value's key itself.
    """

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "stalwart:cache:",
        local_entries: int = 10_000,
        local_bytes: int = 64 * 1024 * 1024,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """``local_entries=0`` turns the in-process tier off."""
        from redis import Redis

        self.prefix = prefix
        self.redis: Redis = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._lookup = self.redis.register_script(_LOOKUP_LUA)
        self._lock = threading.Lock()
        self._local = _BoundedTLRU(local_entries, local_bytes, timer) if local_entries else None
        #: lookups the local tier answered (the value was not sent again)
        self.local_hits = 0
        #: the epoch of Redis's counters the last lookup saw (None before the first)
        self._epoch: str | None = None

    def _vkey(self, key: CacheKey, gens: Generations) -> str:
        return f"{self.prefix}v:{key}@{_tag(gens)}"

    def lookup(self, key: CacheKey) -> tuple[Generations, bool, Any]:
        keys = [self.prefix + c for c in _counters(key)]
        keys += [self.prefix + "stats", self.prefix + "epoch"]
        held = None
        if self._local is not None:
            with self._lock:
                held = self._local.get(key)
        tag = held.tag if held is not None and held.tag is not None else ""
        args = [self.prefix, str(key), tag, secrets.token_hex(8)]
        *gens, raw, current, pttl, epoch = self._lookup(keys=keys, args=args)
        g = (int(gens[0]), int(gens[1]), int(gens[2]), int(gens[3]))
        self._epoch = _text(epoch)
        if current and held is not None:
            with self._lock:
                self.local_hits += 1
            return g, True, held.value
        if raw is None:
            return g, False, None
        value = json.loads(raw)
        if int(pttl) > 0:
            self._keep(key, g, value, raw, int(pttl) / 1000)
        return g, True, value

    def _keep(self, key: CacheKey, gens: Generations, value: Any, raw: bytes, ttl: float) -> None:
        """Hold ``value`` in the local tier, for no longer than Redis holds it."""
        if self._local is None or self._epoch is None:
            return
        size = len(raw) + len(str(key)) + ENTRY_OVERHEAD
        tag = f"{self._epoch}/{_tag(gens)}"
        with self._lock:
            try:
                self._local[key] = _Entry(value, ttl, size, tag)
            except ValueError:  # larger than the whole local tier: Redis keeps it
                self._local.pop(key, None)

    def generations(self, key: CacheKey) -> Generations:
        g0, g1, g2, g3 = (
            int(v or 0) for v in self.redis.mget([self.prefix + c for c in _counters(key)])
        )
        return (g0, g1, g2, g3)

    def store(self, key: CacheKey, gens: Generations, value: Any, raw: bytes, ttl: float) -> None:
        self.redis.set(self._vkey(key, gens), raw, px=max(1, int(ttl * 1000)))
        self._keep(key, gens, value, raw, ttl)

    def bump(self, counters: Iterable[str]) -> None:
        names = list(counters)
        with self.redis.pipeline(transaction=True) as pipe:
            for name in names:
                pipe.incr(self.prefix + name)
            pipe.hincrby(self.prefix + "stats", "invalidations", len(names))
            pipe.execute()

    def drop(self, namespace: str | None) -> None:
        pattern = f"{self.prefix}v:" + ("*" if namespace is None else f"{_escape(namespace)}:*")
        batch: list[bytes] = []
        for name in self.redis.scan_iter(match=pattern, count=1000):
            batch.append(name)
            if len(batch) >= 1000:
                self.redis.unlink(*batch)
                batch.clear()
        if batch:
            self.redis.unlink(*batch)
        if self._local is not None:
            with self._lock:
                if namespace is None:
                    self._local.clear()
                else:
                    for k in [k for k in self._local if k.namespace == namespace]:
                        del self._local[k]

    def fill(self, stats: CacheStats) -> None:
        """This process's local tier; what the server holds is in ``shared()``."""
        if self._local is None:
            return
        with self._lock:
            self._local.expire()
            stats.entries = len(self._local)
            stats.bytes = int(self._local.currsize)
            stats.evictions = self._local.evictions
            stats.expirations = self._local.expirations
            stats.local_hits = self.local_hits

    def shared(self) -> dict[str, int]:
        counters = self.redis.hgetall(self.prefix + "stats")
        shared = {_text(k): int(v) for k, v in counters.items()}
        info = self.redis.info("stats")
        shared["server_evicted_keys"] = int(info.get("evicted_keys", 0))
        shared["entries"] = sum(
            1 for _ in self.redis.scan_iter(match=f"{self.prefix}v:*", count=1000)
        )
        return shared

    def ping(self) -> None:
        self.redis.ping()

    def close(self) -> None:
        self.redis.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Cache:
    """``get_or_compute`` over a backend, with single flight and invalidation by scope."""

    def __init__(self, backend: CacheBackend) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._inflight: dict[tuple[CacheKey, Generations], Future[Any]] = {}
        self._stats = CacheStats(backend.name)

    @classmethod
    def from_config(cls, cfg: AppConfig, *, timer: Callable[[], float] | None = None) -> Cache:
        """The cache the settings describe (``STALWART_CACHE_*``)."""
        if cfg.cache_backend == "redis":
            return cls(
                RedisBackend(
                    cfg.redis_url.get_secret_value(),
                    prefix=cfg.cache_redis_prefix,
                    local_entries=cfg.cache_max_entries if cfg.cache_redis_local else 0,
                    local_bytes=cfg.cache_max_bytes,
                    timer=timer or time.monotonic,
                )
            )
        return cls(
            MemoryBackend(
                max_entries=cfg.cache_max_entries,
                max_bytes=cfg.cache_max_bytes,
                timer=timer or time.monotonic,
            )
        )

    def get_or_compute(self, key: CacheKey, fn: Callable[[], T], ttl: float) -> T:
        """The cached value of ``key``, or ``fn()`` computed once, cached for ``ttl`` s.

        Concurrent callers of one missing key in this process wait for a single ``fn()``. An
        exception from ``fn`` reaches every waiting caller and is not cached. If the backend
        fails (Redis down), ``fn()`` is returned uncached and the failure is logged.
        """
        if not 0 < ttl <= MAX_TTL_S:
            raise CacheError(f"A cache TTL must be in (0, {MAX_TTL_S:.0f}] s, not {ttl}.")
        try:
            gens, found, value = self.backend.lookup(key)
        except CacheError:
            raise
        except Exception as exc:
            self._backend_failed("lookup", key, exc)
            return fn()
        if found:
            with self._lock:
                self._stats.hits += 1
            return value  # type: ignore[no-any-return]
        slot = (key, gens)
        with self._lock:
            self._stats.misses += 1
            flight = self._inflight.get(slot)
            leader = flight is None
            if flight is None:
                flight = self._inflight[slot] = Future()
        if not leader:
            return flight.result()  # type: ignore[no-any-return]
        try:
            value = fn()
            raw = encode(key, value)
            if self.backend.name == "redis":
                # What a later hit returns (lists for tuples, ...): give that now too.
                value = json.loads(raw)
        except BaseException as exc:
            with self._lock:
                self._inflight.pop(slot, None)
            flight.set_exception(exc)
            raise
        try:
            self.backend.store(key, gens, value, raw, ttl)
        except Exception as exc:
            self._backend_failed("store", key, exc)
        # Stored before the flight ends, so a caller arriving now finds the value.
        with self._lock:
            self._inflight.pop(slot, None)
        flight.set_result(value)
        return value  # type: ignore[no-any-return]

    def invalidate(self, *scopes: Scope) -> None:
        """Make every value in ``scopes`` unreachable (the UnitOfWork calls this after commit).

        A failure to reach Redis is retried twice, then raised: the caller's data is
        committed, and a value cached before it may be served until its TTL ends.
        """
        if not scopes:
            return
        counters = sorted({_counter_names(s) for s in scopes})
        self._with_retries("invalidate", lambda: self.backend.bump(counters))
        with self._lock:
            self._stats.invalidations += len(counters)

    def clear(self, namespace: str | None = None) -> None:
        """Invalidate ``namespace`` (everything if None) and free the memory it held."""
        counter = "g0" if namespace is None else _counter_names(Scope(namespace))
        self._with_retries("clear", lambda: self.backend.bump([counter]))
        with self._lock:
            self._stats.invalidations += 1
        self.backend.drop(namespace)

    def version_of(self, key: CacheKey) -> str:
        """A token that changes whenever ``key`` is invalidated (for keys of other caches)."""
        gens = self.backend.generations(key)
        return f"{key}@{'.'.join(map(str, gens))}"

    def stats(self) -> CacheStats:
        """A snapshot of this process's counters, without a round trip (for metrics)."""
        with self._lock:
            snap = CacheStats(**self._stats.__dict__)
        self.backend.fill(snap)
        return snap

    def shared_stats(self) -> dict[str, int]:
        """The counters every process adds to (Redis: hits, misses, invalidations, entries)."""
        return self.backend.shared()

    def check(self) -> None:
        """Raise unless the backend answers (Redis: a PING)."""
        self.backend.ping()

    def close(self) -> None:
        """Release the backend's connections."""
        self.backend.close()

    def _with_retries(self, what: str, action: Callable[[], None]) -> None:
        for attempt in range(3):
            try:
                action()
                return
            except Exception as exc:
                self._backend_failed(what, None, exc)
                if attempt == 2:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _backend_failed(self, what: str, key: CacheKey | None, exc: Exception) -> None:
        with self._lock:
            self._stats.errors += 1
        log.warning(
            "cache backend failed",
            operation=what,
            backend=self.backend.name,
            key=str(key) if key else None,
            error=f"{type(exc).__name__}: {exc}",
        )
