"""Optional dependencies: which extra brings which driver, and the error when one is missing.

The core (in-memory store, in-process triggers) needs anyio and punq only. PostgreSQL needs
``pip install 'resilient-task[postgres]'`` (SQLAlchemy, psycopg), Kafka ``[kafka]`` (aiokafka),
the metrics endpoint ``[metrics]`` (prometheus-client), the dashboard ``[dashboard]``, cron
jobs ``[cron]`` (cronsim) and the OpenTelemetry observer ``[opentelemetry]``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from resilient_task.errors import ConfigurationError

__all__ = ["EXTRAS", "require_extra"]

EXTRAS: Mapping[str, tuple[str, ...]] = {
    "postgres": ("sqlalchemy", "psycopg"),
    "kafka": ("aiokafka",),
    "metrics": ("prometheus_client",),
    "dashboard": ("starlette", "jinja2", "uvicorn"),
    "cron": ("cronsim",),
    "opentelemetry": ("opentelemetry",),
}
"""Each extra and the top-level packages it installs."""


def require_extra(extra: str, what: str) -> None:
    """Raise :class:`ConfigurationError` unless the packages of ``extra`` can be imported.

    Args:
        extra: a key of :data:`EXTRAS`.
        what: what needs it, for the message (e.g. ``"database_url= (PostgreSQL)"``).
    """
    for package in EXTRAS[extra]:
        try:
            importlib.import_module(package)
        except ImportError as exc:
            raise ConfigurationError(
                f"{what} needs the {extra!r} extra, which is not installed ({exc}): "
                f"pip install 'resilient-task[{extra}]'"
            ) from exc
