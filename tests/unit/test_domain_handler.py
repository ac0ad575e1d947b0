"""Handlers: which tasks they accept, built with keywords or fluently."""

from __future__ import annotations

import functools
from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest

from resilient_task import blocking_processor
from resilient_task.domain import (
    BaseTask,
    ExponentialRetryPolicy,
    NoRetryPolicy,
    ProcessResult,
    SimpleConcurrencyPolicy,
    SimpleProcessingPolicy,
    Task,
    TaskHandler,
    TaskHandlerBuilder,
    for_types,
)
from resilient_task.errors import ValidationError


async def pay(task: Task) -> ProcessResult:
    return ProcessResult.DONE


def a_base(task_type: str) -> BaseTask:
    return BaseTask(id=uuid4(), version=1, type=task_type)


def is_urgent(task: BaseTask) -> bool:
    return task.priority == 0


def test_for_types_accepts_exactly_the_listed_types() -> None:
    accepts = for_types("payment", "refund")
    assert accepts(a_base("payment"))
    assert accepts(a_base("refund"))
    assert not accepts(a_base("payout"))


def test_for_types_needs_at_least_one_type() -> None:
    with pytest.raises(ValidationError, match="at least one task type"):
        for_types()


def test_for_types_reads_well_in_logs() -> None:
    assert for_types("refund", "payment").__qualname__ == "for_types(payment, refund)"


def test_a_handler_built_from_types_handles_only_those_types() -> None:
    handler = TaskHandler(types={"payment", "refund"}, processor=pay)
    assert handler.handles(a_base("payment"))
    assert not handler.handles(a_base("payout"))
    assert handler.types == frozenset({"payment", "refund"})


def test_types_given_as_one_str_mean_that_one_type_not_its_letters() -> None:
    handler = TaskHandler(types="payment", processor=pay)
    assert handler.handles(a_base("payment"))
    assert not handler.handles(a_base("p"))
    assert handler.types == frozenset({"payment"})


def test_a_handler_built_from_a_predicate_asks_it() -> None:
    handler = TaskHandler(predicate=is_urgent, processor=pay)
    assert handler.handles(BaseTask(id=uuid4(), version=0, type="any", priority=0))
    assert not handler.handles(BaseTask(id=uuid4(), version=0, type="any", priority=5))


@pytest.mark.parametrize(
    "selection",
    [{}, {"types": {"payment"}, "predicate": is_urgent}],
    ids=["neither", "both"],
)
def test_a_handler_needs_exactly_one_of_predicate_or_types(selection: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="exactly one of predicate= or types="):
        TaskHandler(processor=pay, **selection)


def test_empty_types_are_rejected() -> None:
    with pytest.raises(ValidationError, match="at least one task type"):
        TaskHandler(types=[], processor=pay)


def test_a_processor_that_is_not_callable_is_rejected() -> None:
    with pytest.raises(ValidationError, match="processor must be an async callable"):
        TaskHandler(types="payment", processor="pay")  # type: ignore[arg-type]


def test_a_predicate_that_is_not_callable_is_rejected() -> None:
    with pytest.raises(ValidationError):
        TaskHandler(predicate="payment", processor=pay)  # type: ignore[arg-type]


def test_types_that_are_not_str_are_rejected() -> None:
    with pytest.raises(ValidationError):
        TaskHandler(types=["payment", 3], processor=pay)  # type: ignore[list-item]


def test_a_handler_has_the_documented_defaults() -> None:
    handler = TaskHandler(types="payment", processor=pay)
    assert handler.retry_policy == ExponentialRetryPolicy()
    assert isinstance(handler.concurrency_policy, SimpleConcurrencyPolicy)
    assert handler.processing_policy == SimpleProcessingPolicy()
    assert handler.transactional is False
    assert handler.name == "pay"


def test_handlers_do_not_share_a_default_concurrency_limit() -> None:
    first = TaskHandler(types="payment", processor=pay)
    second = TaskHandler(types="refund", processor=pay)
    built = TaskHandlerBuilder(for_types("payment"), pay).build()
    assert len({id(h.concurrency_policy) for h in (first, second, built)}) == 3


def test_default_concurrency_is_100_and_10_for_transactional_handlers() -> None:
    # A transactional processor holds a pooled connection while it runs.
    assert TaskHandler(types="a", processor=pay).concurrency_policy.max_concurrency == 100
    transactional = TaskHandler(types="a", processor=pay, transactional=True)
    assert transactional.concurrency_policy.max_concurrency == 10
    built = TaskHandlerBuilder(for_types("a"), pay).transactional().build()
    assert built.concurrency_policy.max_concurrency == 10
    explicit = SimpleConcurrencyPolicy()
    chosen = TaskHandler(types="a", processor=pay, transactional=True, concurrency_policy=explicit)
    assert chosen.concurrency_policy is explicit


def test_the_builder_sets_every_option() -> None:
    retry = NoRetryPolicy()
    concurrency = SimpleConcurrencyPolicy(2)
    processing = SimpleProcessingPolicy(timeout=timedelta(seconds=30))
    handler = (
        TaskHandlerBuilder(for_types("payment"), pay)
        .with_retry_policy(retry)
        .with_concurrency_policy(concurrency)
        .with_processing_policy(processing)
        .transactional()
        .named("payments")
        .build()
    )
    assert handler.processor is pay
    assert handler.handles(a_base("payment"))
    assert handler.retry_policy is retry
    assert handler.concurrency_policy is concurrency
    assert handler.processing_policy is processing
    assert handler.transactional is True
    assert handler.name == "payments"


def test_the_builder_defaults_match_the_keyword_constructor() -> None:
    built = TaskHandlerBuilder(is_urgent, pay).build()
    assert built.predicate is is_urgent
    assert built.retry_policy == ExponentialRetryPolicy()
    assert built.processing_policy == SimpleProcessingPolicy()
    assert built.transactional is False
    assert built.name == "pay"


def test_transactional_can_be_switched_off_again() -> None:
    handler = TaskHandlerBuilder(is_urgent, pay).transactional().transactional(False).build()
    assert handler.transactional is False


def test_handlers_compare_by_identity() -> None:
    first = TaskHandler(types="payment", processor=pay)
    second = TaskHandler(types="payment", processor=pay)
    assert first != second


def _plain(task: Task) -> ProcessResult:
    return ProcessResult.DONE


class _Processors:
    def method(self, task: Task) -> ProcessResult:
        return ProcessResult.DONE

    async def async_method(self, task: Task) -> ProcessResult:
        return ProcessResult.DONE


@pytest.mark.parametrize(
    "processor",
    [_plain, _Processors().method, functools.partial(_plain), print],
    ids=["def", "method", "partial-of-def", "builtin"],
)
def test_a_plain_function_processor_is_refused_pointing_to_blocking_processor(
    processor: Any,
) -> None:
    with pytest.raises(ValidationError, match=r"plain function.*blocking_processor"):
        TaskHandler(types="payment", processor=processor)


def _async_via_sync_wrapper(func: Any) -> Any:
    @functools.wraps(func)
    def wrapper(task: Task) -> Any:
        return func(task)  # returns the coroutine

    return wrapper


@pytest.mark.parametrize(
    "processor",
    [
        pay,
        _Processors().async_method,
        functools.partial(pay),
        blocking_processor(_plain),
        _async_via_sync_wrapper(pay),
        lambda task: pay(task),
    ],
    ids=["async-def", "async-method", "partial-of-async", "blocking", "wrapped", "lambda"],
)
def test_async_processors_and_wrapped_ones_are_accepted(processor: Any) -> None:
    assert TaskHandler(types="payment", processor=processor).processor is processor
