"""The one ``/readyz`` shape both services answer, also read by the launcher's banner.

``{"ready": bool, "checks": {name: "ok" | why not}, "degraded": {name: what}}``: a failing check
makes the replica unready (503); a degradation is reported but the replica keeps serving.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from shared.http.responses import json_response

__all__ = ["Readiness", "readiness_response"]


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, str]
    degraded: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(value == "ok" for value in self.checks.values())

    @property
    def failing(self) -> dict[str, str]:
        return {name: why for name, why in self.checks.items() if why != "ok"}


def readiness_response(readiness: Readiness) -> web.Response:
    body = {"ready": readiness.ready, "checks": readiness.checks, "degraded": readiness.degraded}
    return json_response(
        body, status=200 if readiness.ready else 503, headers={"Cache-Control": "no-store"}
    )
