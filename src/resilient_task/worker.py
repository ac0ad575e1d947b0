"""``resilient-task worker --app module:attribute``: one node until SIGTERM or SIGINT."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
from typing import Any

import anyio

from resilient_task.bootstrap import ResilientTask
from resilient_task.environment import gc_threshold_from_env, log_level_from_env
from resilient_task.errors import ConfigurationError
from resilient_task.extras import require_extra
from resilient_task.gc_tuning import tune_gc
from resilient_task.logtext import loggable

__all__ = ["load_app", "run_worker"]

log = logging.getLogger("resilient_task.worker")


def load_app(target: str) -> ResilientTask:
    """Import ``module:attribute``: a ResilientTask, or a zero-argument callable returning one."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"--app must look like 'package.module:attribute', got {target!r}")
    sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    try:
        obj: Any = getattr(module, attribute)
    except AttributeError as exc:
        raise ConfigurationError(f"{module_name!r} has no attribute {attribute!r}") from exc
    if callable(obj) and not isinstance(obj, ResilientTask):
        obj = obj()
    if not isinstance(obj, ResilientTask):
        raise ConfigurationError(f"{target} is a {type(obj).__name__}, expected ResilientTask")
    return obj


async def _serve(app: ResilientTask, monitoring: Any = None, gc_threshold: int = 0) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with app, monitoring or contextlib.nullcontext():
            tune_gc(gc_threshold)
            log.warning(
                "worker %s running; SIGTERM or SIGINT stops it gracefully", app.properties.node_id
            )
            async for signum in signals:
                log.warning(
                    "worker %s received %s: stopping (grace %s)",
                    app.properties.node_id,
                    signal.Signals(signum).name,
                    app.properties.shutdown_grace,
                )
                break


def run_worker(
    target: str,
    *,
    app: ResilientTask | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
) -> int:
    """Run the node named by ``target`` until a stop signal; returns the exit code.

    0 after a stop signal. A node that fails instead (it can no longer accept work) is
    logged at ERROR with the failure and gives 1, so that a supervisor restarts the process
    rather than leaving an idle worker.
    """
    logging.basicConfig(  # a no-op when the command line configured logging already
        level=log_level_from_env(os.environ),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    gc_threshold = gc_threshold_from_env(os.environ)  # a bad value stops before the node loads
    if app is None:
        app = load_app(target)
    monitoring = None
    if metrics_port is not None:
        require_extra("metrics", "--metrics-port")
        from resilient_task.monitoring import NodeMonitoring

        monitoring = NodeMonitoring(app, port=metrics_port, host=metrics_host)
    try:
        anyio.run(_serve, app, monitoring, gc_threshold)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit from user code included: the node is gone
        log.error(
            "worker %s stopped: it can no longer accept work (%s); exiting with status 1",
            app.properties.node_id,
            loggable(_describe(exc)),
            exc_info=exc,
        )
        return 1
    return 0


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    try:
        text = str(exc)
    except Exception:
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
