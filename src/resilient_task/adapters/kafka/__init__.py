"""Kafka triggering with aiokafka (asyncio only)."""

from resilient_task.adapters.kafka.triggerer import KafkaTriggerer

__all__ = ["KafkaTriggerer"]
