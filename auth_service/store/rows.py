"""Queries and row mappings both backends share; only the parameter placeholder differs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from auth_service.domain.models import RefreshToken, RefreshTokenView, Session, User

__all__ = ["THROTTLE_UPSERT", "refresh_view", "refresh_view_sql"]

_REFRESH_VIEW = """
    SELECT t.token_hash, t.sid, t.created_at, t.expires_at, t.rotated_at,
           s.user_id, s.scope, s.created_at, s.expires_at, s.revoked_at,
           u.id, u.username, u.password_hash, u.scope, u.created_at
    FROM refresh_tokens t
    JOIN sessions s ON s.sid = t.sid
    JOIN users u ON u.id = s.user_id
    WHERE t.token_hash = {param}
"""

THROTTLE_UPSERT = """
    INSERT INTO login_throttle (key, failures, window_start, blocked_until)
    VALUES ({p[0]}, {p[1]}, {p[2]}, {p[3]})
    ON CONFLICT (key) DO UPDATE SET failures = excluded.failures,
        window_start = excluded.window_start, blocked_until = excluded.blocked_until
"""


def refresh_view_sql(param: str) -> str:
    """A refresh token with its session and user in one round trip (``param``: ``?`` or ``$1``)."""
    return _REFRESH_VIEW.format(param=param)


def refresh_view(values: Sequence[Any]) -> RefreshTokenView:
    return RefreshTokenView(
        RefreshToken(*values[:5]), Session(values[1], *values[5:10]), User(*values[10:15])
    )
