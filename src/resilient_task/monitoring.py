"""A node's monitoring: Prometheus metrics, cluster gauges and health endpoints.

``resilient-task worker --metrics-port 9464`` uses it; in your own process::

    app = ResilientTask.from_env(handlers=[...])
    monitoring = NodeMonitoring(app, port=9464)   # before the node starts: wires its observer
    async with app, monitoring:
        ...                                        # /metrics, /healthz, /readyz served

Needs the optional ``prometheus-client`` package (``resilient-task[metrics]``).

What runs while the node runs: the HTTP endpoints (see
:mod:`resilient_task.adapters.prometheus.server`), a store probe every second (readiness),
and the cluster gauges (every 30 s, by the one node holding the advisory lock; see
:mod:`resilient_task.adapters.prometheus.cluster`).

Readiness: the node has started (its executor takes work and its resumer polls the store)
and the store answered the last probe. Every worker node polls, so a node whose consumer has
no partition still takes the work the resumer finds: it is ready.
"""

from __future__ import annotations

import functools
import logging
from types import TracebackType
from typing import Self

import anyio
import anyio.abc
from prometheus_client import Gauge

from resilient_task.adapters.prometheus.cluster import ClusterGauges, ClusterLock, SoleNodeLock
from resilient_task.adapters.prometheus.observer import PREFIX, PrometheusObserver
from resilient_task.adapters.prometheus.server import DEFAULT_HOST, serve_metrics
from resilient_task.bootstrap import ResilientTask
from resilient_task.errors import ConfigurationError
from resilient_task.ports.task_queries import TaskQueries
from resilient_task.service.health import Readiness, StoreProbe
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.stores import AnyTaskDAO

__all__ = ["DEFAULT_HOST", "NodeMonitoring", "registered_types"]

log = logging.getLogger("resilient_task.metrics")


def registered_types(registry: HandlerRegistry) -> frozenset[str]:
    """The task types named by the registry's handlers (``types=``); predicates name none."""
    found: set[str] = set()
    for handler in registry.handlers:
        if handler.types is not None:
            found.update(handler.types)
    return frozenset(found)


def _read_side(dao: AnyTaskDAO) -> tuple[TaskQueries, ClusterLock] | None:
    """The read port and cluster lock of ``dao``'s store; None for a store we cannot read."""
    from resilient_task.adapters.memory.task_dao import InMemoryTaskDAO

    if isinstance(dao, InMemoryTaskDAO):
        from resilient_task.adapters.memory.queries import InMemoryTaskQueries

        return InMemoryTaskQueries(dao=dao), SoleNodeLock()
    try:
        from resilient_task.adapters.postgres.dao import PostgresTaskDAO
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return None
    if isinstance(dao, PostgresTaskDAO):
        from resilient_task.adapters.postgres.cluster_lock import PostgresAdvisoryLock
        from resilient_task.adapters.postgres.queries import PostgresTaskQueries

        return PostgresTaskQueries(dao=dao), PostgresAdvisoryLock(dao=dao)
    return None


class NodeMonitoring:
    """Metrics and health endpoints of one node; see the module docstring.

    Args:
        app: the node, not yet started: its observer is set here.
        port: the TCP port of the endpoints (0: any free port, see :attr:`port`).
        host: the address to bind; this machine only unless told otherwise.
        cluster_interval: seconds between two reads of the cluster gauges.
        probe_interval: seconds between two store probes.
        probe_timeout: seconds a probe may take before the store counts as unreachable.
    """

    def __init__(
        self,
        app: ResilientTask,
        *,
        port: int,
        host: str = DEFAULT_HOST,
        cluster_interval: float = 30.0,
        probe_interval: float = 1.0,
        probe_timeout: float = 2.0,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigurationError(f"metrics port must be from 0 to 65535, got {port}")
        self._app = app
        self._host = host
        self._wanted_port = port
        self._cluster_interval = cluster_interval
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self.types = registered_types(app.registry)
        """The task types counted under their own ``type`` label."""
        self.observer = PrometheusObserver(task_types=self.types)
        """The node's observer; its ``registry`` is what ``/metrics`` serves."""
        app.observer = self.observer
        self.port: int | None = None
        """The bound port once serving."""
        self.probe: StoreProbe | None = None
        self._tg: anyio.abc.TaskGroup | None = None

    def readiness(self) -> Readiness:
        """Ready when the node runs and its store answered the last probe."""
        if self._tg is None or self.probe is None:
            return Readiness(False, "node not started")
        if not self.probe.reachable:
            return Readiness(False, self.probe.problem)
        return Readiness(True, "")

    async def __aenter__(self) -> Self:
        """Start the probe, the cluster gauges and the endpoints (the node must be running)."""
        app = self._app
        executor = app.executor
        self.observer.watch_triggers_in_memory(lambda: float(executor.running))
        ready = Gauge(
            f"{PREFIX}ready",
            "1 while this node is ready (what /readyz answers), else 0.",
            registry=self.observer.registry,
        )
        ready.set_function(lambda: 1.0 if self.readiness().ready else 0.0)
        self.probe = StoreProbe(
            dao=app.dao, interval=self._probe_interval, timeout=self._probe_timeout
        )
        await self.probe.probe()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            tg.start_soon(self.probe.run)
            side = _read_side(app.dao)
            if side is not None:
                gauges = ClusterGauges(
                    queries=side[0],
                    lock=side[1],
                    clock=app.clock,
                    registry=self.observer.registry,
                    task_types=self.types,
                    interval=self._cluster_interval,
                )
                tg.start_soon(gauges.run)
            serve = functools.partial(
                serve_metrics,
                registry=self.observer.registry,
                readiness=self.readiness,
                port=self._wanted_port,
                host=self._host,
            )
            self.port = await tg.start(serve)
        except BaseException:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
            raise
        self._tg = tg
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop serving."""
        tg, self._tg = self._tg, None
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
