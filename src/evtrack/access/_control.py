"""Who is asking, and what they may do: authentication and authorization on read models.

Decisions read the access read model (users, tokens, grants) and the tracking read models (the
experiment behind a run). They are cached in memory for the hot path (a training job logging
to one run asks the same question thousands of times), and the cache is correct, not merely
short-lived:

- every cached decision belongs to an *epoch*; the epoch moves when this process commits an
  event that changes access (a grant, a new user, a new experiment that makes its creator an
  owner) and when the access read model, wherever its projector runs, notifies that it
  changed;
- the first lookup in a new epoch waits until the access read model includes everything
  committed before it (read-your-writes), then reads;
- a lookup that finds nothing (an unknown user, a run not projected yet) waits for freshness
  and reads again before it says no;
- while the notification listener is down, nothing is cached.

The mapping from a run or a logged model to its experiment never changes, so it is cached
for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg
import structlog

from evtrack.access._secrets import hash_token, password_digest, verify_password
from evtrack.application import Freshness
from evtrack.errors import ErrorCode, EvtrackError
from evtrack.permissions import (
    ACCESS_CHANNEL,
    EVERYTHING,
    MANAGE,
    WILDCARD,
    AccessLevel,
    Visibility,
    access_level,
)
from evtrack.queries import auth as queries
from evtrack.queries.auth import UserRecord

log = structlog.get_logger("evtrack.access")

K = TypeVar("K")
V = TypeVar("V")

AUTH_READ_MODELS = ("auth",)
LOOKUP_READ_MODELS = ("auth", "runs", "logged_models", "experiments")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``is_admin`` may do anything."""

    name: str
    is_admin: bool = False


class _Lru(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K, max_age_s: float | None = None) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        stored_at, value = item
        if max_age_s is not None and time.monotonic() - stored_at > max_age_s:
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = (time.monotonic(), value)
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


class AccessControl:
    """Authentication and authorization for one server process."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        freshness: Freshness,
        *,
        default_permission: AccessLevel,
        connect: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
        cache_ttl_s: float = 30.0,
    ) -> None:
        self._pool = pool
        self._freshness = freshness
        self.default_permission = default_permission
        self._connect = connect
        self._ttl = cache_ttl_s
        self._epoch = 0
        self._fresh_epoch = -1
        self._refresh_lock = asyncio.Lock()
        self._listening = connect is None  # no listener needed when nothing else writes
        self._users: _Lru[str, UserRecord | None] = _Lru(10_000)
        self._passwords: _Lru[tuple[str, bytes], str] = _Lru(10_000)
        self._tokens: _Lru[str, tuple[Principal, int | None]] = _Lru(10_000)
        self._levels: _Lru[tuple[str, str, str], AccessLevel] = _Lru(100_000)
        self._run_experiments: _Lru[str, str] = _Lru(200_000)
        self._model_experiments: _Lru[str, str] = _Lru(100_000)
        self._model_names: _Lru[str, str] = _Lru(100_000)
        self._listener: asyncio.Task[None] | None = None

    # --- cache lifecycle -----------------------------------------------------------------

    def invalidate(self) -> None:
        """Who may do what changed: forget cached decisions; the next lookup reads fresh."""
        self._epoch += 1
        self._users.clear()
        self._passwords.clear()
        self._tokens.clear()
        self._levels.clear()
        self._model_names.clear()  # renames and deletes are access events too

    async def start(self) -> None:
        if self._connect is not None:
            self._listener = asyncio.create_task(self._listen())

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _listen(self) -> None:
        assert self._connect is not None
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await self._connect()
                await conn.add_listener(ACCESS_CHANNEL, lambda *_: self.invalidate())
                # Anything may have changed while nobody listened.
                self.invalidate()
                self._listening = True
                while not conn.is_closed():
                    await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down: retry, uncached meanwhile
                log.warning("access.listener_down", error=str(exc))
            finally:
                self._listening = False
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(1.0)

    @property
    def _caching(self) -> bool:
        return self._listening

    async def _fresh(self, names: Sequence[str] = AUTH_READ_MODELS) -> None:
        """Wait until ``names`` include everything committed before now (bounded); when they
        cannot catch up, refuse (503, retry) rather than decide on stale grants."""
        behind = await self._freshness.wait(names)
        if behind:
            raise EvtrackError(
                ErrorCode.TEMPORARILY_UNAVAILABLE,
                f"Access decisions need read models {', '.join(behind)}, which did not catch "
                "up with the event log in time; retry shortly.",
                headers={"Retry-After": "1"},
            )

    async def _epoch_fresh(self) -> None:
        """At the first lookup of an epoch, wait for the access read model to catch up."""
        if self._fresh_epoch == self._epoch and self._caching:
            return
        async with self._refresh_lock:
            epoch = self._epoch
            if self._fresh_epoch == epoch and self._caching:
                return
            await self._fresh()
            self._fresh_epoch = epoch

    # --- authentication ------------------------------------------------------------------

    async def user(self, username: str) -> UserRecord | None:
        await self._epoch_fresh()
        if self._caching:
            cached = self._users.get(username, self._ttl)
            if cached is not None:
                return cached
        found = await queries.user(self._pool, username)
        if found is None:
            # Created a moment ago, perhaps through another server: look once more when
            # the read model has caught up.
            await self._fresh()
            found = await queries.user(self._pool, username)
        if found is not None and self._caching:
            self._users.put(username, found)
        return found

    async def authenticate_password(self, username: str, password: str) -> Principal | None:
        record = await self.user(username)
        if record is None or not password:
            return None
        digest = password_digest(password)
        if self._passwords.get((username, digest), self._ttl) == record.password_hash:
            return Principal(record.username, record.is_admin)
        if not await verify_password(record.password_hash, password):
            return None
        if self._caching:
            self._passwords.put((username, digest), record.password_hash)
        return Principal(record.username, record.is_admin)

    async def authenticate_token(self, secret: str) -> Principal | None:
        await self._epoch_fresh()
        token_hash = hash_token(secret)
        cached = self._tokens.get(token_hash, self._ttl) if self._caching else None
        if cached is None:
            found = await queries.token_owner(self._pool, token_hash)
            if found is None:
                await self._fresh()
                found = await queries.token_owner(self._pool, token_hash)
            if found is None:
                return None
            token, record = found
            cached = (Principal(record.username, record.is_admin), token.expires_at)
            if self._caching:
                self._tokens.put(token_hash, cached)
        principal, expires_at = cached
        if expires_at is not None and expires_at <= time.time() * 1000:
            return None
        return principal

    async def principal_named(self, username: str) -> Principal:
        """A caller an authenticating proxy vouched for: admin if a user of that name is."""
        record = await self.user(username)
        return Principal(username, record is not None and record.is_admin)

    # --- authorization -------------------------------------------------------------------

    def _resolve(self, grants: dict[str, str], resource_id: str) -> AccessLevel:
        explicit = grants.get(resource_id) if resource_id != WILDCARD else None
        if explicit is None:
            explicit = grants.get(WILDCARD)
        if explicit is None:
            return self.default_permission
        level = access_level(explicit)
        if not level.can_read:  # DENY and NO_PERMISSIONS are vetoes, not floors
            return level
        # A positive grant never gives less than everyone gets (MLflow's floor).
        return max(level, self.default_permission, key=lambda lv: lv.rank)

    async def level(
        self, principal: Principal, resource_type: str, resource_id: str
    ) -> AccessLevel:
        """What ``principal`` may do on one resource (``*``: on resources of the type at
        large, e.g. to create one)."""
        if principal.is_admin:
            return MANAGE
        await self._epoch_fresh()
        key = (principal.name, resource_type, resource_id)
        if self._caching:
            cached = self._levels.get(key, self._ttl)
            if cached is not None:
                return cached
        grants = await queries.grants_on(self._pool, principal.name, resource_type, resource_id)
        level = self._resolve(grants, resource_id)
        if self._caching:
            self._levels.put(key, level)
        return level

    async def visibility(self, principal: Principal, resource_type: str) -> Visibility:
        """The resources of a type ``principal`` may read, as a search filter."""
        if principal.is_admin:
            return EVERYTHING
        await self._epoch_fresh()
        grants = await queries.grants_of_type(self._pool, principal.name, resource_type)
        base = self._resolve({k: v for k, v in grants.items() if k == WILDCARD}, WILDCARD)
        readable = {
            rid for rid in grants if rid != WILDCARD and self._resolve(grants, rid).can_read
        }
        if base.can_read:
            return Visibility(exclude=frozenset(g for g in grants if g != WILDCARD) - readable)
        return Visibility(include=frozenset(readable))

    # --- what a request names ------------------------------------------------------------

    async def _owner(
        self,
        cache: _Lru[str, str],
        key: str,
        lookup: Callable[[Any, str], Awaitable[str | None]],
        read_models: Sequence[str],
        wait: bool = True,
    ) -> str | None:
        cached = cache.get(key)
        if cached is not None:
            return cached
        found = await lookup(self._pool, key)
        if found is None and wait:
            await self._fresh(read_models)
            found = await lookup(self._pool, key)
        if found is not None:
            cache.put(key, found)
        return found

    async def experiment_of_run(self, run_id: str, *, wait: bool = True) -> str | None:
        """The run's experiment; ``wait`` False answers None at once for a run the read
        model does not show yet (native ingest, whose decision re-checks the answer)."""
        return await self._owner(
            self._run_experiments, run_id, queries.experiment_of_run, ("runs",), wait
        )

    async def experiment_of_logged_model(self, model_id: str) -> str | None:
        return await self._owner(
            self._model_experiments,
            model_id,
            queries.experiment_of_logged_model,
            ("logged_models",),
        )

    async def model_name(self, model_key: str) -> str | None:
        """The current name of a registered model, by its stream key (None once deleted)."""
        cached = self._model_names.get(model_key, self._ttl) if self._caching else None
        if cached is not None:
            return cached
        found = await queries.model_name(self._pool, model_key)
        if found is not None and self._caching:
            self._model_names.put(model_key, found)
        return found

    async def experiment_named(self, name: str, *, wait: bool = True) -> str | None:
        found = await queries.experiment_id_by_name(self._pool, name)
        if found is None and wait:
            await self._fresh(("experiments",))
            found = await queries.experiment_id_by_name(self._pool, name)
        return found
