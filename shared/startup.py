"""What every entry point (auth_service, ws_service, `make run`'s launcher) does first."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from shared.config.env import env_log_level
from shared.jsonlog import configure_logging
from shared.metrics import workers

__all__ = ["start_logging"]

log = logging.getLogger(__name__)


def start_logging(environ: Mapping[str, str], level_variable: str) -> None:
    """JSON lines from the first one, then at the level ``level_variable`` names: any other word
    raises ``ConfigError`` once the JSON handler is in place (it was a plain-text traceback).
    Metrics are plain in-memory ones whatever ``PROMETHEUS_MULTIPROC_DIR`` the process inherited
    (:func:`shared.metrics.workers.single_process`)."""
    configure_logging()
    if workers.single_process() is not None:
        log.warning(
            "PROMETHEUS_MULTIPROC_DIR is ignored: the service keeps its workers' metrics itself"
        )
    configure_logging(env_log_level(environ, level_variable))
