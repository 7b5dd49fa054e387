"""One contract, three stores: SQLite in tmp_path, the machine's PostgreSQL, and the unit tests'
in-memory fake (so the fake the domain's unit tests trust behaves like the real ones)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from auth_service.domain.errors import StoreUnavailable, Throttled, UsernameTaken
from auth_service.domain.models import (
    Client,
    OutboxBacklog,
    OutboxItem,
    RefreshToken,
    Session,
    StoredKey,
    ThrottleState,
    TrustedIssuer,
    User,
    WithdrawnKey,
)
from auth_service.domain.store import Announcement, Store
from auth_service.store import open_store
from auth_service.store import postgres as postgres_store
from auth_service.store.sql import ROTATIONS_IN_FLIGHT, SqlStore, Statement
from tests.services import postgres_schema
from tests.unit.auth.memory_store import MemoryStore

OpenReplica = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def open_replica(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[OpenReplica]:
    """Opens the backend's one database once more per call, as another replica would (the
    in-memory store, which no replica shares, is the same store each time)."""
    if request.param == "memory":
        memory = MemoryStore()

        async def same() -> Store:
            return memory

        yield same
        return
    async with AsyncExitStack() as stack:
        url = (
            f"sqlite:///{tmp_path / 'auth.db'}"
            if request.param == "sqlite"
            else await stack.enter_async_context(postgres_schema())
        )

        async def open_one() -> Store:
            opened = await open_store(url)
            stack.push_async_callback(opened.close)
            return opened

        yield open_one


@pytest.fixture
async def store(open_replica: OpenReplica) -> Store:
    return await open_replica()


def make_user(name: str = "alice") -> User:
    return User(f"id-{name}", name, "hash", "chat:read", time.time())


async def make_session(store: Store, sid: str = "s1", user: str = "alice") -> RefreshToken:
    now = time.time()
    if await store.get_user_by_username(user) is None:
        await store.create_user(make_user(user))
    token = RefreshToken(f"h-{sid}-0", sid, now, now + 100)
    await store.create_session(Session(sid, f"id-{user}", "chat:read", now, now + 1000), token)
    return token


async def test_users_round_trip_and_unique_username(store: Store) -> None:
    user = make_user("o'brien; DROP TABLE users;--")
    await store.create_user(user)
    assert await store.get_user_by_username(user.username) == user
    assert await store.get_user_by_username("nobody") is None
    with pytest.raises(UsernameTaken):
        await store.create_user(User("other-id", user.username, "h", "", 0.0))


async def test_refresh_rotation_is_compare_and_set(store: Store) -> None:
    first = await make_session(store)
    view = await store.find_refresh_token(first.token_hash)
    assert view is not None and view.token == first and view.session.user_id == "id-alice"
    now = time.time()
    second = RefreshToken("h-s1-1", "s1", now, now + 100)
    assert await store.rotate_refresh_token(first.token_hash, second, now) is True
    assert (
        await store.rotate_refresh_token(first.token_hash, RefreshToken("x", "s1", now, now), now)
        is False
    )
    assert await store.find_refresh_token("x") is None
    rotated = await store.find_refresh_token(first.token_hash)
    assert rotated is not None and rotated.token.rotated_at == pytest.approx(now)


async def test_concurrent_rotations_have_exactly_one_winner(store: Store) -> None:
    first = await make_session(store)
    now = time.time()
    results = await asyncio.gather(
        *(
            store.rotate_refresh_token(
                first.token_hash, RefreshToken(f"n{i}", "s1", now, now + 9), now
            )
            for i in range(20)
        )
    )
    assert results.count(True) == 1


async def test_rotations_racing_on_two_replicas_have_exactly_one_winner(
    store: Store, open_replica: OpenReplica
) -> None:
    other = await open_replica()
    first = await make_session(store)
    now = time.time()
    new = [RefreshToken(f"n{i}", "s1", now, now + 9) for i in range(20)]
    results = await asyncio.gather(
        *(
            (store, other)[i % 2].rotate_refresh_token(first.token_hash, token, now)
            for i, token in enumerate(new)
        )
    )
    assert results.count(True) == 1
    stored = [await store.find_refresh_token(token.token_hash) is not None for token in new]
    assert stored == results, "only the winner's new token is stored"


async def test_live_rotations_at_once_each_get_their_own_view(
    store: Store, open_replica: OpenReplica
) -> None:
    """Rotations made at one moment (run together, one statement on PostgreSQL, one transaction
    on SQLite) each rotate their own token and read their own session back; one token presented
    twice at that moment rotates once; an unknown or already rotated one rotates nothing."""
    other = await open_replica()
    for sid in ("s1", "s2", "s3"):
        await make_session(store, sid, user="alice" if sid != "s2" else "bob")
    now = time.time()
    assert await store.rotate_live_refresh_token("h-s3-0", "h-s3-x", now, now + 50)
    calls = [
        ("h-s1-0", "h-s1-1"),
        ("h-s2-0", "h-s2-1"),
        ("h-s1-0", "h-s1-again"),  # the same token at the same moment
        ("h-none", "h-none-1"),
        ("h-s3-0", "h-s3-1"),  # rotated already
    ]
    views = await asyncio.gather(
        *(
            store.rotate_live_refresh_token(old, new, now + i, now + 50)
            for i, (old, new) in enumerate(calls)
        ),
        other.rotate_live_refresh_token("h-s1-0", "h-s1-elsewhere", now, now + 50),
    )
    won = [view is not None for view in views]
    assert won[1] and not won[3] and not won[4]
    assert [won[0], won[2], won[5]].count(True) == 1, "one winner for h-s1-0"
    view = views[1]
    assert view is not None
    assert (view.token.token_hash, view.session.sid, view.user.username) == ("h-s2-0", "s2", "bob")
    assert view.token.rotated_at == pytest.approx(now + 1)
    stored = await store.find_refresh_token("h-s2-1")
    assert stored is not None and stored.token == RefreshToken("h-s2-1", "s2", now + 1, now + 50)
    for (old, new), ok in zip([*calls, ("h-s1-0", "h-s1-elsewhere")], won, strict=True):
        kept = await store.find_refresh_token(new)
        assert (kept is not None) == ok, new
        if ok:
            assert (await store.find_refresh_token(old)).token.rotated_at is not None  # type: ignore[union-attr]


@pytest.mark.postgres
async def test_postgres_rotates_the_live_tokens_of_one_moment_in_one_statement() -> None:
    """One round trip for the refreshes one turn of the event loop handles, not one each."""
    async with postgres_schema() as url:
        store = await open_store(url)
        try:
            for i in range(8):
                await make_session(store, f"s{i}")
            assert isinstance(store, SqlStore)
            database = store._db
            statements: list[str] = []
            fetch = database.fetch_atomically

            async def counted(
                query: Statement, then: Sequence[Statement] = (), **kw: Any
            ) -> list[Any]:
                statements.append(query[0])
                return await fetch(query, then, **kw)

            database.fetch_atomically = counted  # type: ignore[method-assign]
            now = time.time()
            views = await asyncio.gather(
                *(
                    store.rotate_live_refresh_token(f"h-s{i}-0", f"n{i}", now, now + 9)
                    for i in range(8)
                )
            )
            assert [view.session.sid for view in views if view is not None] == [
                f"s{i}" for i in range(8)
            ]
            assert len(statements) == 1
        finally:
            await store.close()


def _held_statements(store: Store) -> tuple[list[str], asyncio.Event]:
    """Counts the store's rotation statements and holds each until the event is set: as if the
    database took that long."""
    assert isinstance(store, SqlStore)
    database = store._db
    statements: list[str] = []
    go = asyncio.Event()
    fetch = database.fetch_atomically

    async def held(query: Statement, then: Sequence[Statement] = (), **kw: Any) -> list[Any]:
        statements.append(query[0])
        await go.wait()
        return await fetch(query, then, **kw)

    database.fetch_atomically = held  # type: ignore[method-assign]
    return statements, go


@pytest.mark.postgres
async def test_postgres_rotations_asked_while_statements_run_go_in_one_statement() -> None:
    """A refresh's statement costs the process about what its signature does, so the rotations
    asked for while ROTATIONS_IN_FLIGHT statements run (each in a turn of its own) wait and go
    together in the next one, not one statement each."""
    async with postgres_schema() as url:
        store = await open_store(url)
        try:
            for i in range(ROTATIONS_IN_FLIGHT + 5):
                await make_session(store, f"s{i}")
            statements, go = _held_statements(store)
            now = time.time()
            tasks = []
            for i in range(ROTATIONS_IN_FLIGHT + 5):
                tasks.append(
                    asyncio.create_task(
                        store.rotate_live_refresh_token(f"h-s{i}-0", f"n{i}", now, now + 9)
                    )
                )
                for _ in range(3):
                    await asyncio.sleep(0)  # a turn of its own
            assert len(statements) == ROTATIONS_IN_FLIGHT, "the others wait for a statement"
            go.set()
            views = await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
            assert [view and view.session.sid for view in views] == [
                f"s{i}" for i in range(ROTATIONS_IN_FLIGHT + 5)
            ]
            assert len(statements) == ROTATIONS_IN_FLIGHT + 1
        finally:
            await store.close()


@pytest.mark.postgres
async def test_postgres_a_rotation_waits_for_a_statement_no_longer_than_a_call() -> None:
    """Statements that never end (a stalled database) leave the rotations waiting behind them
    unavailable (503, try again) after the call timeout, not waiting for ever."""
    async with postgres_schema() as url:
        store = await open_store(url, call_timeout=0.3)
        try:
            for i in range(ROTATIONS_IN_FLIGHT + 1):
                await make_session(store, f"s{i}")
            statements, go = _held_statements(store)
            now = time.time()
            running = []
            for i in range(ROTATIONS_IN_FLIGHT):
                running.append(
                    asyncio.create_task(
                        store.rotate_live_refresh_token(f"h-s{i}-0", f"n{i}", now, now + 9)
                    )
                )
                await asyncio.sleep(0.01)
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                last = ROTATIONS_IN_FLIGHT
                await asyncio.wait_for(
                    store.rotate_live_refresh_token(f"h-s{last}-0", "late", now, now + 9), 5
                )
            assert 0.25 < time.monotonic() - started < 2
            go.set()
            assert all(await asyncio.wait_for(asyncio.gather(*running), timeout=5))
            assert len(statements) == ROTATIONS_IN_FLIGHT
            view = await store.find_refresh_token(f"h-s{ROTATIONS_IN_FLIGHT}-0")
            assert view is not None and view.token.rotated_at is None, "the refused one is live"
        finally:
            await store.close()


@pytest.mark.postgres
async def test_postgres_rotations_waiting_on_a_cancelled_one_fail_rather_than_hang() -> None:
    async with postgres_schema() as url:
        store = await open_store(url)
        try:
            for i in range(3):
                await make_session(store, f"s{i}")
            now = time.time()
            tasks = [
                asyncio.create_task(
                    store.rotate_live_refresh_token(f"h-s{i}-0", f"n{i}", now, now + 9)
                )
                for i in range(3)
            ]
            await asyncio.sleep(0)  # the first runs the three, once the loop turns
            tasks[0].cancel()
            outcomes = await asyncio.wait_for(
                asyncio.gather(*tasks, return_exceptions=True), timeout=5
            )
            assert isinstance(outcomes[0], asyncio.CancelledError)
            assert all(isinstance(outcome, StoreUnavailable) for outcome in outcomes[1:])
            view = await store.rotate_live_refresh_token("h-s1-0", "n1", now, now + 9)
            assert view is not None, "nothing was rotated: the client's retry succeeds"
        finally:
            await store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("together", [1, 3])
async def test_postgres_a_rotation_that_timed_out_never_commits_later(together: int) -> None:
    """A refresh answered 503 changed nothing, so the client's retry works: a statement that
    timed out on a stalled server (its backend stopped) must not commit once the server runs
    it after all, which a statement sent alone did (its own transaction), and the retry then
    read as a reuse that ended the session (an outside probe)."""
    async with postgres_schema() as url:
        store = await open_store(url, call_timeout=0.5)
        try:
            for i in range(2 * together):
                await make_session(store, f"s{i}")
            now = time.time()
            warm = await asyncio.gather(  # the server then has the statement prepared
                *(
                    store.rotate_live_refresh_token(f"h-s{i}-0", f"w{i}", now, now + 9)
                    for i in range(together, 2 * together)
                )
            )
            assert all(view is not None for view in warm)
            assert isinstance(store, SqlStore)
            async with store._db.connection() as conn:
                backend = (await conn.fetch("SELECT pg_backend_pid() AS pid"))[0]["pid"]
            try:
                os.kill(backend, signal.SIGSTOP)
            except PermissionError:
                pytest.skip("this user cannot signal the PostgreSQL server's processes")
            try:
                now = time.time()
                outcomes = await asyncio.gather(
                    *(
                        store.rotate_live_refresh_token(f"h-s{i}-0", f"n{i}", now, now + 9)
                        for i in range(together)
                    ),
                    return_exceptions=True,
                )
                assert all(isinstance(outcome, StoreUnavailable) for outcome in outcomes)
            finally:
                os.kill(backend, signal.SIGCONT)
            await asyncio.sleep(0.5)  # the server has run whatever it had received
            for i in range(together):
                view = await store.find_refresh_token(f"h-s{i}-0")
                assert view is not None and view.token.rotated_at is None, "nothing changed"
                assert await store.find_refresh_token(f"n{i}") is None
        finally:
            await store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("path", ["live, three in one statement", "checked, one"])
async def test_postgres_a_rotation_whose_commit_went_unanswered_is_answered_as_it_ended(
    path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL stalled with the COMMIT sent: the call timed out and a whole batch was answered
    503, then PostgreSQL resumed and committed it, so every client's retry read as a reuse (an
    outside probe, 3 stalls in 5). The outcome is found out first: each call is answered as its
    transaction ended, a view exactly when its new token is stored."""
    async with postgres_schema() as url:
        store = await open_store(url, call_timeout=0.5)
        try:
            together = 3 if path.startswith("live") else 1
            for i in range(together):
                await make_session(store, f"s{i}")
            stopped: list[int] = []
            loop = asyncio.get_running_loop()

            def stall_after(call: Any) -> Any:
                async def stalled(self: Any, sql: str, *args: Any) -> Any:
                    result = await call(self, sql, *args)
                    if not stopped:  # the statement ran; its COMMIT comes next
                        backend = self._conn.get_server_pid()
                        try:
                            os.kill(backend, signal.SIGSTOP)
                        except PermissionError:
                            pytest.skip("this user cannot signal the PostgreSQL server's processes")
                        stopped.append(backend)
                        loop.call_later(0.8, os.kill, backend, signal.SIGCONT)
                    return result

                return stalled

            for name in ("fetch", "execute"):
                original = getattr(postgres_store._Connection, name)
                monkeypatch.setattr(postgres_store._Connection, name, stall_after(original))
            now = time.time()
            if together > 1:
                outcomes: list[Any] = await asyncio.gather(
                    *(
                        store.rotate_live_refresh_token(f"h-s{i}-0", f"n{i}", now, now + 9)
                        for i in range(together)
                    ),
                    return_exceptions=True,
                )
            else:
                new = RefreshToken("n0", "s0", now, now + 9)
                outcomes = [await _outcome(store.rotate_refresh_token("h-s0-0", new, now))]
            assert stopped, "the COMMIT was stalled"
            await asyncio.sleep(1.0)  # whatever the server had received, it has run
            for i, outcome in enumerate(outcomes):
                stored = await store.find_refresh_token(f"n{i}") is not None
                assert stored == (
                    outcome not in (None, False) and not isinstance(outcome, Exception)
                )
                assert stored, f"the COMMIT ran once the server resumed: {outcome!r}"
        finally:
            await store.close()


async def _outcome(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except StoreUnavailable as exc:
        return exc


async def test_a_rotation_that_cannot_store_its_new_token_rotates_nothing(store: Store) -> None:
    first = await make_session(store)
    taken = await make_session(store, "s2")
    with pytest.raises(StoreUnavailable):
        await store.rotate_refresh_token(first.token_hash, replace(taken, sid="s1"), time.time())
    view = await store.find_refresh_token(first.token_hash)
    assert view is not None and view.token.rotated_at is None


async def test_a_superseding_token_takes_the_place_of_the_familys_live_one(store: Store) -> None:
    first = await make_session(store)
    await make_session(store, "s2")
    now = time.time()
    lost = RefreshToken("h-s1-lost", "s1", now, now + 100)
    assert await store.rotate_refresh_token(first.token_hash, lost, now)
    again = RefreshToken("h-s1-again", "s1", now + 1, now + 100)
    assert await store.supersede_refresh_tokens("s1", again, now + 1) is True
    view = await store.find_refresh_token(lost.token_hash)
    assert view is not None and view.token.rotated_at == pytest.approx(now + 1)
    view = await store.find_refresh_token(again.token_hash)
    assert view is not None and view.token.rotated_at is None
    other = await store.find_refresh_token("h-s2-0")
    assert other is not None and other.token.rotated_at is None, "another family is left alone"
    stray = RefreshToken("h-none", "none", now, now + 100)
    assert await store.supersede_refresh_tokens("none", stray, now) is False  # nothing live
    assert await store.find_refresh_token("h-none") is None


async def test_superseding_tokens_racing_on_two_replicas_all_take_over(
    store: Store, open_replica: OpenReplica
) -> None:
    """Each of several refreshes of a bound family by its key holder, at once and across
    replicas, takes the place of the one before: none finds the family without a live token
    because the one committed meanwhile was outside its snapshot (PostgreSQL's read committed
    read four at once that way, an outside probe)."""
    other = await open_replica()
    first = await make_session(store)
    now = time.time()
    won = RefreshToken("h-s1-won", "s1", now, now + 100)
    assert await store.rotate_refresh_token(first.token_hash, won, now)
    late = [RefreshToken(f"h-s1-late{i}", "s1", now, now + 100) for i in range(8)]
    results = await asyncio.gather(
        *(
            (store, other)[i % 2].supersede_refresh_tokens("s1", token, now)
            for i, token in enumerate(late)
        )
    )
    assert results == [True] * len(late)
    live = [
        token
        for token in (won, *late)
        if (view := await store.find_refresh_token(token.token_hash)) is not None
        and view.token.rotated_at is None
    ]
    assert len(live) == 1, "one live token is left: the last to take over"


async def test_a_session_keeps_its_dpop_key(store: Store) -> None:
    now = time.time()
    await store.create_user(make_user("bob"))
    token = RefreshToken("h-b-0", "b1", now, now + 100)
    await store.create_session(Session("b1", "id-bob", "", now, now + 1000, jkt="jkt-1"), token)
    view = await store.find_refresh_token(token.token_hash)
    assert view is not None and view.session.jkt == "jkt-1"


async def test_a_rotation_binds_an_unbound_session_once(store: Store) -> None:
    first = await make_session(store)
    now = time.time()
    second = RefreshToken("h-s1-1", "s1", now, now + 100)
    assert await store.rotate_refresh_token(first.token_hash, second, now, bind="jkt-a") is True
    view = await store.find_refresh_token(second.token_hash)
    assert view is not None and view.session.jkt == "jkt-a"
    third = RefreshToken("h-s1-2", "s1", now, now + 100)
    assert await store.rotate_refresh_token(second.token_hash, third, now, bind="jkt-b") is False
    assert await store.find_refresh_token(third.token_hash) is None
    kept = await store.find_refresh_token(second.token_hash)
    assert kept is not None and kept.token.rotated_at is None and kept.session.jkt == "jkt-a"
    assert await store.rotate_refresh_token(second.token_hash, third, now) is True


async def test_a_live_token_is_rotated_in_one_call(store: Store) -> None:
    first = await make_session(store)
    now = time.time()
    view = await store.rotate_live_refresh_token(first.token_hash, "h-s1-1", now, now + 50)
    assert view is not None
    assert view.token == replace(first, rotated_at=now)
    assert (view.session.sid, view.session.scope, view.user.id) == ("s1", "chat:read", "id-alice")
    stored = await store.find_refresh_token("h-s1-1")
    assert stored is not None and stored.token == RefreshToken("h-s1-1", "s1", now, now + 50)
    rotated = await store.find_refresh_token(first.token_hash)
    assert rotated is not None and rotated.token.rotated_at == pytest.approx(now)
    assert await store.rotate_live_refresh_token(first.token_hash, "h-s1-2", now, now) is None
    assert await store.find_refresh_token("h-s1-2") is None


async def test_a_rotated_token_expires_with_its_session(store: Store) -> None:
    first = await make_session(store)
    now = time.time()
    view = await store.rotate_live_refresh_token(first.token_hash, "h-s1-1", now, now + 5000)
    assert view is not None
    stored = await store.find_refresh_token("h-s1-1")
    assert stored is not None and stored.token.expires_at == view.session.expires_at < now + 5000


async def _unbound_app_user_session(store: Store) -> RefreshToken:
    now = time.time()
    await store.ensure_user(User("acme:u1", "acme:u1", "", "", now, "acme"))
    token = RefreshToken("h-app-0", "app", now, now + 100)
    await store.create_session(Session("app", "acme:u1", "", now, now + 1000), token)
    return token


@pytest.mark.parametrize(
    "why",
    ["unknown", "rotated", "expired", "session expired", "revoked", "bound", "app user"],
)
async def test_the_live_rotation_changes_nothing_unless_the_token_asks_nothing_more(
    store: Store, open_replica: OpenReplica, why: str
) -> None:
    """Every refusal (and what needs a proof or a client's policy) is left to the lookup."""
    token = await make_session(store)
    now = time.time()
    if why == "unknown":
        token = replace(token, token_hash="nope")
    elif why == "rotated":
        assert await store.rotate_refresh_token(
            token.token_hash, replace(token, token_hash="x"), now
        )
    elif why == "expired":
        now = token.expires_at
    elif why == "session expired":
        token = RefreshToken("h-long", "long", now, now + 5000)
        await store.create_session(Session("long", "id-alice", "", now, now + 10), token)
        now += 10
    elif why == "revoked":
        await store.revoke_session(token.sid, now)
    elif why == "bound":
        assert await store.rotate_refresh_token(
            token.token_hash, replace(token, token_hash="x"), now, bind="jkt-a"
        )
        token = replace(token, token_hash="x")
    else:
        await store.create_client(Client("acme", b"s", "", None, None, now))
        token = await _unbound_app_user_session(store)
    before = await store.find_refresh_token(token.token_hash)
    assert await store.rotate_live_refresh_token(token.token_hash, "new", now, now + 50) is None
    assert await store.find_refresh_token("new") is None
    assert await store.find_refresh_token(token.token_hash) == before


async def test_live_rotations_racing_on_two_replicas_have_exactly_one_winner(
    store: Store, open_replica: OpenReplica
) -> None:
    other = await open_replica()
    first = await make_session(store)
    now = time.time()
    results = await asyncio.gather(
        *(
            (store, other)[i % 2].rotate_live_refresh_token(first.token_hash, f"n{i}", now, now + 9)
            for i in range(20)
        )
    )
    winners = [i for i, view in enumerate(results) if view is not None]
    assert len(winners) == 1
    stored = [await store.find_refresh_token(f"n{i}") is not None for i in range(20)]
    assert stored == [i in winners for i in range(20)], "only the winner's new token is stored"


async def test_a_live_rotation_that_cannot_store_its_new_token_rotates_nothing(
    store: Store,
) -> None:
    first = await make_session(store)
    taken = await make_session(store, "s2")
    with pytest.raises(StoreUnavailable):
        await store.rotate_live_refresh_token(
            first.token_hash, taken.token_hash, time.time(), time.time() + 9
        )
    view = await store.find_refresh_token(first.token_hash)
    assert view is not None and view.token.rotated_at is None


async def test_revocation_of_one_session_and_of_all(store: Store) -> None:
    await make_session(store, "s1")
    await make_session(store, "s2")
    now = time.time()
    assert (await store.revoke_session("s1", now)).ended == [("s1", "id-alice")]
    assert (await store.revoke_session("s1", now)).ended == []
    assert (await store.revoke_session("unknown", now)).ended == []
    view = await store.find_refresh_token("h-s1-0")
    assert view is not None and view.session.revoked_at == pytest.approx(now)
    assert (await store.revoke_user_sessions("id-alice", now)).ended == [("s2", "id-alice")]
    assert (await store.revoke_user_sessions("id-alice", now)).ended == []


def announcing(*topics: str) -> Callable[[Sequence[tuple[str, str]]], list[Announcement]]:
    """Announcements naming the families they are for, one per topic, and one more per family."""

    def announce(ended: Sequence[tuple[str, str]]) -> list[Announcement]:
        items = [
            Announcement(f"t-{sid}", f"{sid}/{user}", 5.0, (f"k-{sid}", 99.0))
            for sid, user in ended
        ]
        return items + [Announcement(topic, "all", 6.0) for topic in topics]

    return announce


async def test_a_revocation_writes_its_announcements_in_its_own_transaction(store: Store) -> None:
    """A logout committed and then lost on its way to the bus (the process killed while Redis
    hung) left its sockets open until the token expired: the events are now written to the
    outbox, and kept for a ledger restore, by the transaction that revokes, or not at all."""
    await make_session(store, "s1")
    await make_session(store, "s2")
    await make_session(store, "s3", user="bob")
    now = time.time()

    def refuse(ended: Sequence[tuple[str, str]]) -> list[Announcement]:
        raise RuntimeError("no announcement can be made")

    with pytest.raises(RuntimeError):
        await store.revoke_session("s1", now, refuse)
    with pytest.raises(RuntimeError):
        await store.revoke_user_sessions("id-alice", now, refuse)
    assert await store.session_is_live("s1", now) and await store.session_is_live("s2", now)
    assert await store.outbox_batch(10) == [] and await store.live_revocations(0) == []

    one = await store.revoke_session("s1", now, announcing())
    assert one.ended == [("s1", "id-alice")]
    assert [(i.topic, i.payload, i.next_attempt_at) for i in one.kept] == [
        ("t-s1", "s1/id-alice", 5.0)
    ]
    assert (await store.revoke_session("s1", now, announcing("never"))).kept == []
    every = await store.revoke_user_sessions("id-alice", now, announcing("user"))
    assert every.ended == [("s2", "id-alice")]
    assert [(i.topic, i.payload) for i in every.kept] == [("t-s2", "s2/id-alice"), ("user", "all")]
    none = await store.revoke_user_sessions("id-alice", now, announcing("user"))
    assert (none.ended, [i.topic for i in none.kept]) == ([], ["user"])  # the user's, still
    waiting = await store.outbox_batch(10)
    assert [i.id for i in waiting] == [i.id for i in one.kept + every.kept + none.kept]
    assert await store.outbox_batch(10, due_by=5.5) == one.kept + every.kept[:1]
    assert sorted(await store.live_revocations(50.0)) == ["s1/id-alice", "s2/id-alice"]


async def test_a_session_is_live_until_revoked_or_past_its_lifetime(store: Store) -> None:
    await make_session(store, "s1")
    await make_session(store, "s2")
    now = time.time()
    assert await store.session_is_live("s1", now) is True
    assert await store.session_is_live("s1", now + 1000) is False, "past its lifetime"
    assert await store.session_is_live("unknown", now) is False
    await store.revoke_session("s1", now)
    assert await store.session_is_live("s1", now) is False
    await store.revoke_user_sessions("id-alice", now)
    assert await store.session_is_live("s2", now) is False


async def test_signing_key_generation_is_unique(store: Store) -> None:
    key = StoredKey("k1", 1, b"\x00secret", '{"kty":"RSA"}', 1.0, 2.0)
    assert await store.add_signing_key(key) is True
    assert await store.add_signing_key(StoredKey("k2", 1, b"x", "{}", 1.0, 2.0)) is False
    assert await store.add_signing_key(StoredKey("k3", 2, b"y", "{}", 3.0, 4.0)) is True
    assert [k.kid for k in await store.list_signing_keys()] == ["k1", "k3"]
    assert (await store.list_signing_keys())[0] == key
    await store.delete_signing_key("k1")
    assert [k.kid for k in await store.list_signing_keys()] == ["k3"]


async def test_a_withdrawn_key_is_deleted_and_recorded_once(open_replica: OpenReplica) -> None:
    store, other_replica = await open_replica(), await open_replica()
    for generation, kid in enumerate(["k1", "k2"], start=1):
        await store.add_signing_key(StoredKey(kid, generation, b"x", "{}", 1.0, 2.0))
    assert await store.withdraw_signing_key("k1", 50.0) is True
    assert [k.kid for k in await other_replica.list_signing_keys()] == ["k2"]
    assert await other_replica.list_withdrawn_keys() == [WithdrawnKey("k1", 1, 50.0)]
    assert await store.withdraw_signing_key("k1", 60.0) is False, "already withdrawn"
    assert await store.withdraw_signing_key("unknown", 60.0) is False
    assert await store.list_withdrawn_keys() == [WithdrawnKey("k1", 1, 50.0)]
    assert [k.kid for k in await store.list_signing_keys()] == ["k2"]


def bump(states: dict[str, ThrottleState]) -> dict[str, ThrottleState]:
    return {key: replace(state, failures=state.failures + 1) for key, state in states.items()}


async def test_throttle_update_reads_fresh_rows_and_writes_back(store: Store) -> None:
    seen: list[dict[str, ThrottleState]] = []

    def record(states: dict[str, ThrottleState]) -> dict[str, ThrottleState]:
        seen.append(dict(states))
        return {"a": ThrottleState(2, 110.0, 500.0)}

    assert await store.update_throttle(["a", "b"], record) == {"a": ThrottleState(2, 110.0, 500.0)}
    assert seen == [{"a": ThrottleState(), "b": ThrottleState()}]
    assert await store.update_throttle(["b", "a"], bump) == {
        "a": ThrottleState(3, 110.0, 500.0),
        "b": ThrottleState(1, 0.0, 0.0),
    }


async def test_throttle_read_sees_what_updates_wrote(store: Store) -> None:
    assert await store.read_throttle(["a", "b"]) == {"a": ThrottleState(), "b": ThrottleState()}
    await store.update_throttle(["a"], bump)
    assert await store.read_throttle(["b", "a"]) == {"b": ThrottleState(), "a": ThrottleState(1)}
    assert await store.read_throttle(["a", "a"]) == {"a": ThrottleState(1)}


async def test_throttle_update_that_raises_writes_nothing(store: Store) -> None:
    await store.update_throttle(["a"], bump)

    def refuse(states: dict[str, ThrottleState]) -> dict[str, ThrottleState]:
        raise Throttled("no", retry_after=1)

    with pytest.raises(Throttled):
        await store.update_throttle(["a", "new"], refuse)
    assert await store.update_throttle(["a", "new"], bump) == {
        "a": ThrottleState(2),
        "new": ThrottleState(1),
    }


async def test_concurrent_throttle_updates_lose_nothing(store: Store) -> None:
    await asyncio.gather(*(store.update_throttle(["k", "j"], bump) for _ in range(15)))
    assert (await store.update_throttle(["j", "k"], bump))["k"].failures == 16


async def test_a_throttle_row_purged_by_another_replica_mid_update_reads_as_new(
    open_replica: OpenReplica,
) -> None:
    """A successful login leaves its pair key at zero, which the purge deletes; a login updating
    the key while another replica's purge commits between its placeholder and its locking read
    must see a key never seen, not lose the row (it was a KeyError, a 500 on /v1/login)."""
    store, other_replica = await open_replica(), await open_replica()
    seen: list[dict[str, ThrottleState]] = []

    def cleared(states: dict[str, ThrottleState]) -> dict[str, ThrottleState]:
        seen.append(dict(states))
        return {key: ThrottleState() for key in ("pair", "addr")}

    async def purge() -> None:
        for _ in range(300):
            await other_replica.purge_expired(time.time())

    async def update() -> None:
        for _ in range(300):
            await store.update_throttle(["pair", "addr"], cleared)

    await asyncio.gather(purge(), update())
    assert all(states.keys() == {"pair", "addr"} for states in seen)


@pytest.mark.postgres
async def test_the_purge_passes_over_throttle_rows_a_login_holds() -> None:
    """A login's transaction holds its throttle rows (key order); the hourly purge must not wait
    for them, or the two can wait on each other (PostgreSQL aborts one: deadlock detected, a 503
    on /v1/login). It leaves what a login holds for the next purge."""
    import asyncpg

    async with postgres_schema() as url:
        store = await open_store(url)
        try:
            await store.update_throttle(["pair", "addr"], lambda _: {
                "pair": ThrottleState(), "addr": ThrottleState()})  # fmt: skip
            base, _, query = url.partition("?search_path=")
            login = await asyncpg.connect(base, server_settings={"search_path": query})
            try:
                async with login.transaction():
                    await login.execute(
                        "SELECT * FROM login_throttle WHERE key = 'pair' FOR UPDATE"
                    )
                    async with asyncio.timeout(5):
                        purged = await store.purge_expired(time.time())
                    assert purged == 1, "addr purged, pair (held) left"
                assert await store.purge_expired(time.time()) == 1, "pair, once released"
            finally:
                await login.close()
        finally:
            await store.close()


async def test_purge_removes_expired_tokens_and_sessions(store: Store) -> None:
    token = await make_session(store)
    assert await store.purge_expired(time.time()) == 0
    assert await store.purge_expired(time.time() + 2000) >= 2
    assert await store.find_refresh_token(token.token_hash) is None
    assert (await store.revoke_session("s1", time.time())).ended == [], "the session is gone"
    await store.ping()


async def test_migrations_are_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'again.db'}"
    first = await open_store(url)
    await first.create_user(make_user())
    await first.close()
    second = await open_store(url)
    assert await second.get_user_by_username("alice") is not None
    await second.close()


async def test_outbox_keeps_events_in_order_until_deleted(store: Store) -> None:
    await store.add_outbox("t", "first", 1.0)
    await store.add_outbox("t", "second", 2.0)
    await store.add_outbox("u", "third", 3.0)
    batch = await store.outbox_batch(2)
    assert [(i.topic, i.payload) for i in batch] == [("t", "first"), ("t", "second")]
    await store.delete_outbox([batch[0].id])
    assert [i.payload for i in await store.outbox_batch(10)] == ["second", "third"]
    await store.delete_outbox([i.id for i in await store.outbox_batch(10)])
    assert await store.outbox_batch(10) == []


async def test_revocations_are_kept_while_in_force_the_later_one_per_key(store: Store) -> None:
    await store.keep_revocation("sid:a", "a-1", 100.0)
    await store.keep_revocation("user:u", "u-2", 200.0)
    await store.keep_revocation("user:u", "u-1", 150.0)  # an older event arriving late
    await store.keep_revocation("sid:b", "b-1", 50.0)
    assert await store.live_revocations(60.0) == ["a-1", "u-2"]
    await store.keep_revocation("sid:a", "a-2", 300.0)
    assert await store.live_revocations(60.0) == ["u-2", "a-2"]
    assert await store.live_revocations(300.0) == []
    await store.purge_expired(250.0)
    assert await store.live_revocations(0.0) == ["a-2"]


async def test_outbox_failed_events_wait_until_due_and_dead_letters_are_set_aside(
    store: Store,
) -> None:
    await store.add_outbox("t", "first", 1.0)
    await store.add_outbox("t", "second", 2.0)
    first, second = await store.outbox_batch(10)
    assert first == OutboxItem(first.id, "t", "first", 1.0, 0, None, 0.0, None)
    failed = replace(first, attempts=1, last_error="boom", next_attempt_at=50.0)
    await store.update_outbox(replace(failed, topic="ignored", payload="ignored"))
    assert await store.outbox_batch(10, due_by=49.0) == [second]
    assert await store.outbox_batch(10, due_by=50.0) == [failed, second]
    assert await store.outbox_batch(10) == [failed, second]
    assert await store.outbox_backlog() == OutboxBacklog(waiting=2, oldest_at=1.0, dead=0)
    dead = replace(failed, attempts=2, dead_at=60.0)
    await store.update_outbox(dead)
    assert await store.outbox_batch(10) == [second]
    assert await store.outbox_dead_letters(10) == [dead]
    assert await store.outbox_backlog() == OutboxBacklog(waiting=1, oldest_at=2.0, dead=1)
    await store.delete_outbox([first.id, second.id])
    assert await store.outbox_backlog() == OutboxBacklog(waiting=0, oldest_at=None, dead=0)


def make_client(client_id: str = "acme", scope: str | None = None) -> Client:
    return Client(client_id, b"\x00sealed", "urn:x", scope, None, 1.0)


async def make_app_session(store: Store, client_id: str, user: str, sid: str) -> None:
    sub = f"{client_id}:{user}"
    await store.ensure_user(User(sub, sub, "", "", 1.0, client_id))
    now = time.time()
    await store.create_session(
        Session(sid, sub, "chat:read", now, now + 1000, None, '[{"type":"t"}]', "Bob"),
        RefreshToken(f"h-{sid}", sid, now, now + 100),
    )


async def test_clients_round_trip_and_a_name_is_taken_once(open_replica: OpenReplica) -> None:
    store, other_replica = await open_replica(), await open_replica()
    acme = make_client(scope="chat:read")
    assert await store.create_client(acme) is True
    assert await other_replica.create_client(make_client()) is False
    strict = replace(make_client("zeta"), dpop="required")
    assert await store.create_client(strict) is True
    assert await other_replica.get_client("acme") == acme
    assert await other_replica.get_client("zeta") == strict
    assert await store.get_client("nobody") is None
    assert [c.client_id for c in await store.list_clients()] == ["acme", "zeta"]


async def test_a_rotated_secret_keeps_its_predecessor_until_the_grace_ends(store: Store) -> None:
    await store.create_client(make_client())
    assert await store.rotate_client_secret("acme", b"new", 10.0, 20.0) is True
    rotated = await store.get_client("acme")
    assert rotated is not None
    assert (rotated.secret_encrypted, rotated.secret_rotated_at) == (b"new", 10.0)
    assert (rotated.previous_secret_encrypted, rotated.previous_secret_expires_at) == (
        b"\x00sealed",
        20.0,
    )
    assert await store.rotate_client_secret("acme", b"newer", 30.0, 30.0) is True
    again = await store.get_client("acme")
    assert again is not None and again.previous_secret_encrypted == b"new"
    assert await store.rotate_client_secret("nobody", b"x", 1.0, 1.0) is False


async def test_a_trusted_issuer_is_set_and_cleared_leaving_the_rest(
    open_replica: OpenReplica,
) -> None:
    store, other_replica = await open_replica(), await open_replica()
    await store.create_client(make_client())
    trusted = TrustedIssuer("https://idp/", "https://idp/jwks", "acme", ("ES256", "RS256"))
    assert await store.set_trusted_issuer("acme", trusted) is True
    assert await store.rotate_client_secret("acme", b"new", 10.0, 20.0) is True
    changed = await other_replica.get_client("acme")
    assert changed is not None and changed.trusted == trusted
    assert changed.secret_encrypted == b"new", "one write does not undo the other"
    assert await other_replica.set_trusted_issuer("acme", None) is True
    cleared = await store.get_client("acme")
    assert cleared is not None and cleared.trusted is None
    assert cleared == changed.trusting(None)
    assert await store.set_trusted_issuer("nobody", trusted) is False


async def test_app_users_are_made_once_and_keep_the_session_details(store: Store) -> None:
    await store.create_client(make_client())
    await make_app_session(store, "acme", "42", "s1")
    await store.ensure_user(User("acme:42", "acme:42", "", "changed", 9.0, "acme"))
    view = await store.find_refresh_token("h-s1")
    assert view is not None
    assert view.user == User("acme:42", "acme:42", "", "", 1.0, "acme"), "the first one stays"
    assert (view.session.authorization_details, view.session.username) == ('[{"type":"t"}]', "Bob")
    assert (await store.revoke_user_sessions("acme:42", time.time())).ended == [("s1", "acme:42")]


async def test_deleting_a_client_ends_its_users_and_returns_their_live_sessions(
    store: Store,
) -> None:
    await store.create_client(make_client())
    await store.create_client(make_client("zeta"))
    await make_session(store, "mine")
    await make_app_session(store, "acme", "42", "s1")
    await make_app_session(store, "acme", "43", "s2")
    await make_app_session(store, "acme", "43", "s3")
    await make_app_session(store, "zeta", "42", "z1")
    now = time.time()
    await store.revoke_session("s3", now)
    live = await store.delete_client("acme", now)
    assert live is not None and live.ended == [
        ("s1", "acme:42"),
        ("s2", "acme:43"),
    ]
    assert await store.get_client("acme") is None
    for sid in ("s1", "s2", "s3"):
        assert await store.find_refresh_token(f"h-{sid}") is None
    assert await store.find_refresh_token("h-z1") is not None
    assert await store.find_refresh_token("h-mine-0") is not None
    assert await store.delete_client("acme", now) is None


async def test_an_assertion_jti_is_used_once_on_every_replica(open_replica: OpenReplica) -> None:
    store, other_replica = await open_replica(), await open_replica()
    results = await asyncio.gather(
        *((store, other_replica)[i % 2].use_assertion("acme", "j1", 100.0, 50.0) for i in range(20))
    )
    assert results.count(True) == 1
    assert await store.use_assertion("zeta", "j1", 100.0, 50.0) is True, "per client"
    assert await other_replica.use_assertion("acme", "j1", 200.0, 99.0) is False
    assert await other_replica.use_assertion("acme", "j1", 200.0, 100.0) is True, "expired"
    assert await store.use_assertion("acme", "j1", 300.0, 150.0) is False
    assert await store.purge_expired(150.0) == 1, "zeta's record"
    assert await store.use_assertion("acme", "j1", 300.0, 150.0) is False
