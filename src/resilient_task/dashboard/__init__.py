"""The operators' web dashboard (``pip install 'resilient-task[dashboard]'``).

:func:`create_app` builds the ASGI app; ``resilient-task dashboard`` serves it with uvicorn.
See docs/dashboard.md. The web modules are imported on first use, so ``resilient-task``
itself runs without the extra installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resilient_task.dashboard.app import DashboardLimits, create_app
    from resilient_task.dashboard.stats import DashboardStats, InMemoryDashboardStats

__all__ = ["DashboardLimits", "DashboardStats", "InMemoryDashboardStats", "create_app"]


def __getattr__(name: str) -> Any:
    if name in ("DashboardLimits", "create_app"):
        from resilient_task.dashboard import app

        return getattr(app, name)
    if name in ("DashboardStats", "InMemoryDashboardStats"):
        from resilient_task.dashboard import stats

        return getattr(stats, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
