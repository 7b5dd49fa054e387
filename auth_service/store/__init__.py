"""Storage backends behind the :class:`Store` protocol; :func:`open_store` picks one by URL."""

from __future__ import annotations

from auth_service.store.base import Store

__all__ = ["Store", "open_store"]


async def open_store(url: str) -> Store:
    """``postgresql://...`` selects PostgreSQL; ``sqlite:///path`` (or a bare path) SQLite."""
    if url.startswith(("postgresql://", "postgres://")):
        from auth_service.store.postgres import PostgresStore

        return await PostgresStore.open(url)
    from auth_service.store.sqlite import SqliteStore

    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    return await SqliteStore.open(path)
