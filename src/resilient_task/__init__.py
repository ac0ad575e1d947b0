"""resilient-task: a triggered task eventually runs -- through crashes, broker and database outages.

Quick start::

    from resilient_task import AddTaskRequest, ProcessResult, ResilientTask, TaskHandler

    async def charge(task):
        ...  # business logic; raise to fail (the retry policy decides what next)
        return ProcessResult.DONE

    async with ResilientTask(handlers=[TaskHandler(types={"charge"}, processor=charge)]) as app:
        await app.service.add_task(AddTaskRequest(type="charge", data=b"{...}"))
"""

from resilient_task.bootstrap import ResilientTask
from resilient_task.domain import (
    FINAL_STATUSES,
    TRANSITIONS,
    AddTaskRequest,
    AddTaskResult,
    AddTaskResultCode,
    BaseTask,
    ConcurrencyPolicy,
    ExponentialRetryPolicy,
    NoRetryPolicy,
    ProcessingPolicy,
    Processor,
    ProcessResult,
    RetryPolicy,
    SimpleConcurrencyPolicy,
    SimpleProcessingPolicy,
    StuckTaskResolutionStrategy,
    Task,
    TaskHandler,
    TaskHandlerBuilder,
    TaskPredicate,
    TaskStatus,
    Transition,
    for_types,
)
from resilient_task.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidTransitionError,
    ProcessingTimeoutError,
    ResilientTaskError,
    SchemaVersionError,
    TaskNotFoundError,
    TriggerError,
    ValidationError,
    VersionConflictError,
)
from resilient_task.ids import uuid7
from resilient_task.properties import (
    CleanerProperties,
    KafkaProperties,
    TaskProperties,
    TaskResumerProperties,
)
from resilient_task.service.cleaner import TaskCleaner
from resilient_task.service.context import (
    ProcessingContext,
    current_context,
    current_transaction,
)
from resilient_task.service.executor import TaskExecutor
from resilient_task.service.registry import HandlerRegistry
from resilient_task.service.resumer import TaskResumer
from resilient_task.service.sync import blocking_processor
from resilient_task.service.task_service import TaskService

__all__ = [
    "FINAL_STATUSES",
    "TRANSITIONS",
    "AddTaskRequest",
    "AddTaskResult",
    "AddTaskResultCode",
    "BackendError",
    "BackendUnavailableError",
    "BaseTask",
    "CleanerProperties",
    "ConcurrencyPolicy",
    "ConfigurationError",
    "ExponentialRetryPolicy",
    "HandlerRegistry",
    "InvalidTransitionError",
    "KafkaProperties",
    "NoRetryPolicy",
    "ProcessResult",
    "ProcessingContext",
    "ProcessingPolicy",
    "ProcessingTimeoutError",
    "Processor",
    "ResilientTask",
    "ResilientTaskError",
    "RetryPolicy",
    "SchemaVersionError",
    "SimpleConcurrencyPolicy",
    "SimpleProcessingPolicy",
    "StuckTaskResolutionStrategy",
    "Task",
    "TaskCleaner",
    "TaskExecutor",
    "TaskHandler",
    "TaskHandlerBuilder",
    "TaskNotFoundError",
    "TaskPredicate",
    "TaskProperties",
    "TaskResumer",
    "TaskResumerProperties",
    "TaskService",
    "TaskStatus",
    "Transition",
    "TriggerError",
    "ValidationError",
    "VersionConflictError",
    "blocking_processor",
    "current_context",
    "current_transaction",
    "for_types",
    "uuid7",
]
