"""OpenTelemetry adapters: the tracing observer.

Needs the optional ``opentelemetry-api`` package (``pip install opentelemetry-api``, plus an
SDK and an exporter to send the spans somewhere).
"""

from __future__ import annotations

from resilient_task.adapters.opentelemetry.observer import OpenTelemetryObserver

__all__ = ["OpenTelemetryObserver"]
