"""Handlers: which tasks they accept, the processor, and their policies."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from resilient_task.domain.policies import (
    DEFAULT_TRANSACTIONAL_MAX_CONCURRENCY,
    AnyRetryPolicy,
    ConcurrencyPolicy,
    ExponentialRetryPolicy,
    GlobalConcurrencyPolicy,
    ProcessingPolicy,
    SimpleConcurrencyPolicy,
    SimpleProcessingPolicy,
    check_retry_policy,
)
from resilient_task.domain.results import ProcessResult
from resilient_task.domain.task import BaseTask, Task
from resilient_task.errors import ValidationError

__all__ = ["Processor", "TaskHandler", "TaskHandlerBuilder", "TaskPredicate", "for_types"]

_DEFAULT_CONCURRENCY = SimpleConcurrencyPolicy()
"""Marks "no concurrency policy given"; replaced by a fresh policy per handler (never shared)."""

Processor = Callable[[Task], Awaitable[ProcessResult]]
"""An async function running the business logic; raising means the attempt failed."""
TaskPredicate = Callable[[BaseTask], bool]
"""Decides whether a handler accepts a task, from its id, version, type, sub-type, priority."""


def for_types(*types: str) -> TaskPredicate:
    """A predicate accepting tasks whose type is one of ``types``."""
    wanted = frozenset(types)
    if not wanted:
        raise ValidationError("for_types needs at least one task type")
    for name in wanted:
        if not isinstance(name, str) or not name.strip():
            raise ValidationError(f"task types must be non-blank str, got {name!r}")

    def accepts(task: BaseTask) -> bool:
        return task.type in wanted

    accepts.__qualname__ = f"for_types({', '.join(sorted(wanted))})"
    return accepts


@dataclass(frozen=True, eq=False, kw_only=True)
class TaskHandler:
    """Processes the tasks its predicate accepts.

    Build one with keywords, ``TaskHandler(types={"payment"}, processor=pay)``, or with the
    fluent :class:`TaskHandlerBuilder`. ``transactional=True`` runs the processor inside the
    store's transaction (see :func:`resilient_task.current_transaction`): its writes commit
    only together with the task's completion.

    Without a ``concurrency_policy`` a handler runs at most 100 tasks at once per node
    (:data:`~resilient_task.domain.policies.DEFAULT_MAX_CONCURRENCY`), a transactional one 10
    (each holds a pooled database connection while it runs).
    """

    processor: Processor
    predicate: TaskPredicate | None = None
    types: Iterable[str] | None = None
    retry_policy: AnyRetryPolicy = field(default_factory=ExponentialRetryPolicy)
    concurrency_policy: ConcurrencyPolicy = _DEFAULT_CONCURRENCY
    processing_policy: ProcessingPolicy = field(default_factory=SimpleProcessingPolicy)
    transactional: bool = False
    name: str | None = None

    def __post_init__(self) -> None:
        check_retry_policy(self.retry_policy)
        if self.concurrency_policy is _DEFAULT_CONCURRENCY:
            policy = (
                SimpleConcurrencyPolicy(DEFAULT_TRANSACTIONAL_MAX_CONCURRENCY)
                if self.transactional
                else SimpleConcurrencyPolicy()
            )
            object.__setattr__(self, "concurrency_policy", policy)
        if not callable(self.processor):
            raise ValidationError("processor must be an async callable (task) -> ProcessResult")
        if _is_plain_function(self.processor):
            name = getattr(self.processor, "__qualname__", "processor")
            raise ValidationError(
                f"processor {name} is a plain function, not an async one: it would fail at run "
                f"time. Write it as 'async def', or wrap it: "
                f"processor=resilient_task.blocking_processor({name}) runs it in a worker thread"
            )
        if (self.predicate is None) == (self.types is None):
            raise ValidationError("give exactly one of predicate= or types=")
        if self.predicate is not None and not callable(self.predicate):
            raise ValidationError("predicate must be a callable (BaseTask) -> bool")
        if self.types is not None:
            if isinstance(self.types, str):
                object.__setattr__(self, "types", (self.types,))
            object.__setattr__(self, "types", frozenset(self.types))
            object.__setattr__(self, "predicate", for_types(*self.types))
        if isinstance(self.concurrency_policy, GlobalConcurrencyPolicy) and self.types is None:
            raise ValidationError(
                "a handler with a GlobalConcurrencyPolicy names its task types (types=...): "
                "the store counts the running tasks of the key by type"
            )
        if self.name is None:
            label = getattr(self.processor, "__qualname__", None) or repr(self.processor)
            object.__setattr__(self, "name", label)

    def handles(self, task: BaseTask) -> bool:
        """Whether this handler accepts ``task``."""
        assert self.predicate is not None
        return self.predicate(task)


def _is_plain_function(processor: object) -> bool:
    """Whether ``processor`` is a ``def`` (or method, or builtin) that is surely not async.

    Lambdas and other callables are given the benefit of the doubt (``lambda t: work(t)`` may
    return a coroutine), and so is a sync wrapper around an async function (a decorator made
    with ``functools.wraps``).
    """
    while isinstance(processor, functools.partial):
        processor = processor.func
    if not (
        inspect.isfunction(processor) or inspect.ismethod(processor) or inspect.isbuiltin(processor)
    ):
        return False
    if getattr(processor, "__name__", "") == "<lambda>":
        return False
    return not (
        inspect.iscoroutinefunction(processor)
        or inspect.iscoroutinefunction(inspect.unwrap(processor))
    )


class TaskHandlerBuilder:
    """Fluent construction, close to the reference: ``TaskHandlerBuilder(pred, proc)...build()``."""

    def __init__(self, predicate: TaskPredicate, processor: Processor) -> None:
        self._predicate = predicate
        self._processor = processor
        self._retry: AnyRetryPolicy = ExponentialRetryPolicy()
        self._concurrency: ConcurrencyPolicy = _DEFAULT_CONCURRENCY
        self._processing: ProcessingPolicy = SimpleProcessingPolicy()
        self._transactional = False
        self._name: str | None = None

    def with_retry_policy(self, policy: AnyRetryPolicy) -> TaskHandlerBuilder:
        """Set the retry policy (default: exponential, 5 s x2, 3 retries)."""
        self._retry = policy
        return self

    def with_concurrency_policy(self, policy: ConcurrencyPolicy) -> TaskHandlerBuilder:
        """Set the concurrency policy (default: 100 at once per node, 10 if transactional)."""
        self._concurrency = policy
        return self

    def with_processing_policy(self, policy: ProcessingPolicy) -> TaskHandlerBuilder:
        """Set the processing policy (default: node timeout, RETRY when stuck)."""
        self._processing = policy
        return self

    def transactional(self, enabled: bool = True) -> TaskHandlerBuilder:
        """Run the processor inside the store transaction that completes the task."""
        self._transactional = enabled
        return self

    def named(self, name: str) -> TaskHandlerBuilder:
        """Name the handler in logs."""
        self._name = name
        return self

    def build(self) -> TaskHandler:
        """The configured handler."""
        return TaskHandler(
            predicate=self._predicate,
            processor=self._processor,
            retry_policy=self._retry,
            concurrency_policy=self._concurrency,
            processing_policy=self._processing,
            transactional=self._transactional,
            name=self._name,
        )
