"""resilient-task: a triggered task eventually runs -- through crashes, broker and database outages.

Quick start::

    from resilient_task import AddTaskRequest, ProcessResult, ResilientTask, TaskHandler

    async def charge(task):
        ...  # business logic; raise to fail (the retry policy decides what next)
        return ProcessResult.DONE

    async with ResilientTask(handlers=[TaskHandler(types={"charge"}, processor=charge)]) as app:
        await app.service.add_task(AddTaskRequest(type="charge", data=b"{...}"))

Only what an application needs is here; the engine's parts (executor, resumer, handler
registry, lifecycle table) stay importable from their modules. Ports, for your own adapters:
:mod:`resilient_task.ports`; in-memory adapters and fakes: :mod:`resilient_task.adapters.memory`.
"""

from importlib.metadata import PackageNotFoundError, version

from resilient_task.adapters.kafka.properties import KafkaProperties
from resilient_task.bootstrap import ResilientTask
from resilient_task.domain import (
    AddTaskRequest,
    AddTaskResult,
    AddTaskResultCode,
    BaseTask,
    ConcurrencyPolicy,
    ExponentialRetryPolicy,
    GlobalConcurrencyPolicy,
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
    for_types,
)
from resilient_task.domain.cron import CronJob, CronRun, MissedRuns
from resilient_task.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    GiveUp,
    InvalidTransitionError,
    ProcessingTimeoutError,
    ResilientTaskError,
    RetryAfter,
    SchemaVersionError,
    TaskNotFoundError,
    TriggerError,
    ValidationError,
    VersionConflictError,
)
from resilient_task.ids import uuid7
from resilient_task.properties import CleanerProperties, TaskProperties, TaskResumerProperties
from resilient_task.service.context import (
    ProcessingContext,
    current_context,
    current_transaction,
)
from resilient_task.service.sync import blocking_processor
from resilient_task.service.task_service import TaskService
from resilient_task.settings import KafkaTriggers, NotifyTriggers, PostgresOptions

try:
    __version__ = version("resilient-task")
except PackageNotFoundError:  # a source tree on sys.path, not installed
    __version__ = "0.1.0"  # [project] version in pyproject.toml (a test keeps them equal)

__all__ = [
    "AddTaskRequest",
    "AddTaskResult",
    "AddTaskResultCode",
    "BackendError",
    "BackendUnavailableError",
    "BaseTask",
    "CleanerProperties",
    "ConcurrencyPolicy",
    "ConfigurationError",
    "CronJob",
    "CronRun",
    "ExponentialRetryPolicy",
    "GiveUp",
    "GlobalConcurrencyPolicy",
    "InvalidTransitionError",
    "KafkaProperties",
    "KafkaTriggers",
    "MissedRuns",
    "NoRetryPolicy",
    "NotifyTriggers",
    "PostgresOptions",
    "ProcessResult",
    "ProcessingContext",
    "ProcessingPolicy",
    "ProcessingTimeoutError",
    "Processor",
    "ResilientTask",
    "ResilientTaskError",
    "RetryAfter",
    "RetryPolicy",
    "SchemaVersionError",
    "SimpleConcurrencyPolicy",
    "SimpleProcessingPolicy",
    "StuckTaskResolutionStrategy",
    "Task",
    "TaskHandler",
    "TaskHandlerBuilder",
    "TaskNotFoundError",
    "TaskPredicate",
    "TaskProperties",
    "TaskResumerProperties",
    "TaskService",
    "TaskStatus",
    "TriggerError",
    "ValidationError",
    "VersionConflictError",
    "blocking_processor",
    "current_context",
    "current_transaction",
    "for_types",
    "uuid7",
]
