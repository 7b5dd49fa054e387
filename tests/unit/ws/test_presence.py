"""The embedded presence: one join per user however many tabs, the leave with the last one."""

from __future__ import annotations

import json

from ws_service.domain.presence import Member, MemoryPresence

ALICE, BOB = Member("u1", "alice"), Member("u2", None)


async def test_join_and_leave_once_per_user() -> None:
    sent: list[tuple[str, dict[str, object]]] = []

    async def bus(topic: str, frame: str) -> None:
        sent.append((topic, json.loads(frame)))

    presence = MemoryPresence(bus)
    await presence.add("chat:a", "c1", ALICE)
    await presence.add("chat:a", "c2", ALICE)
    await presence.add("chat:a", "c3", BOB)
    assert await presence.members("chat:a") == [(ALICE, 2), (BOB, 1)]
    await presence.remove("chat:a", "c1", ALICE)
    await presence.remove("chat:a", "c1", ALICE)  # twice is harmless
    await presence.remove("chat:a", "c2", ALICE)
    await presence.remove("chat:a", "c3", BOB)
    assert [(topic, e["type"], e["user"]["id"]) for topic, e in sent] == [
        ("pres:{chat:a}", "join", "u1"),
        ("pres:{chat:a}", "join", "u2"),
        ("pres:{chat:a}", "leave", "u1"),
        ("pres:{chat:a}", "leave", "u2"),
    ]
    assert sent[1][1]["user"] == {"id": "u2", "username": None}
    assert await presence.members("chat:a") == []
