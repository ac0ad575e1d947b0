"""The pure domain: tasks, their lifecycle table, policies, results. No I/O, no clock reads."""

from resilient_task.domain.handler import (
    Processor,
    TaskHandler,
    TaskHandlerBuilder,
    TaskPredicate,
    for_types,
)
from resilient_task.domain.policies import (
    ConcurrencyPolicy,
    ExponentialRetryPolicy,
    GlobalConcurrencyPolicy,
    LegacyRetryPolicy,
    NoRetryPolicy,
    ProcessingPolicy,
    RetryPolicy,
    SimpleConcurrencyPolicy,
    SimpleProcessingPolicy,
    StuckTaskResolutionStrategy,
)
from resilient_task.domain.requests import AddTaskRequest
from resilient_task.domain.results import AddTaskResult, AddTaskResultCode, ProcessResult
from resilient_task.domain.task import (
    FINAL_STATUSES,
    TRANSITIONS,
    BaseTask,
    Task,
    TaskStatus,
    Transition,
)

__all__ = [
    "FINAL_STATUSES",
    "TRANSITIONS",
    "AddTaskRequest",
    "AddTaskResult",
    "AddTaskResultCode",
    "BaseTask",
    "ConcurrencyPolicy",
    "ExponentialRetryPolicy",
    "GlobalConcurrencyPolicy",
    "LegacyRetryPolicy",
    "NoRetryPolicy",
    "ProcessResult",
    "ProcessingPolicy",
    "Processor",
    "RetryPolicy",
    "SimpleConcurrencyPolicy",
    "SimpleProcessingPolicy",
    "StuckTaskResolutionStrategy",
    "Task",
    "TaskHandler",
    "TaskHandlerBuilder",
    "TaskPredicate",
    "TaskStatus",
    "Transition",
    "for_types",
]
