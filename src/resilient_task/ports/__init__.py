"""Ports: one ``typing.Protocol`` per module; each module docstring states the contract."""

from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import NullObserver, Observer
from resilient_task.ports.task_dao import GrabRequest, InsertOutcome, TaskChange, TaskDAO
from resilient_task.ports.triggerer import TriggerCallback, Triggerer

__all__ = [
    "Clock",
    "GrabRequest",
    "InsertOutcome",
    "NullObserver",
    "Observer",
    "TaskChange",
    "TaskDAO",
    "TriggerCallback",
    "Triggerer",
]
