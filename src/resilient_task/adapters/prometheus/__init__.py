"""Prometheus adapters: the metrics observer, the cluster gauges and the HTTP endpoints.

Needs the optional ``prometheus-client`` package (``pip install 'resilient-task[metrics]'``).
"""

from __future__ import annotations

from resilient_task.adapters.prometheus.cluster import ClusterGauges, ClusterLock, SoleNodeLock
from resilient_task.adapters.prometheus.observer import PREFIX, PrometheusObserver

__all__ = ["PREFIX", "ClusterGauges", "ClusterLock", "PrometheusObserver", "SoleNodeLock"]
