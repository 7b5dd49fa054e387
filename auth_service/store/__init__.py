"""Storage backends behind the domain's :class:`~auth_service.domain.store.Store` protocol.

:func:`open_store` picks one by URL: both real backends are a :class:`~auth_service.store.sql.SqlStore`
over their driver; ``memory:`` is the in-process store the domain's unit tests use.
"""

from __future__ import annotations

from auth_service.domain.store import Store

__all__ = ["open_store"]


async def open_store(url: str, call_timeout: float = 5.0) -> Store:
    """``postgresql://...`` selects PostgreSQL; ``sqlite:///path`` (or a bare path) SQLite.
    ``call_timeout`` bounds each call: PostgreSQL's wait for a pooled connection and each statement,
    SQLite's wait for another process's write lock."""
    if url.startswith(("postgresql://", "postgres://")):
        from auth_service.store.postgres import open_postgres

        return await open_postgres(url, call_timeout)
    from auth_service.store.sqlite import open_sqlite

    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    return await open_sqlite(path, call_timeout)
