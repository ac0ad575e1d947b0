"""Adapters for the real process environment."""

from resilient_task.adapters.system.clock import SystemClock

__all__ = ["SystemClock"]
