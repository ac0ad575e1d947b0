"""Kafka triggering with aiokafka (asyncio only); needs ``pip install 'resilient-task[kafka]'``.

:class:`KafkaProperties` imports no driver; :class:`KafkaTriggerer` is imported on first use,
so that the settings can be built where aiokafka is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resilient_task.adapters.kafka.properties import KafkaProperties

if TYPE_CHECKING:
    from resilient_task.adapters.kafka.triggerer import KafkaTriggerer

__all__ = ["KafkaProperties", "KafkaTriggerer"]


def __getattr__(name: str) -> Any:
    if name == "KafkaTriggerer":
        from resilient_task.adapters.kafka.triggerer import KafkaTriggerer

        return KafkaTriggerer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
