"""The public API: ``__all__`` is complete and tidy; both handler styles work end to end."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import tomllib
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest

import resilient_task
import resilient_task.adapters.memory
import resilient_task.domain
import resilient_task.environment
import resilient_task.errors
import resilient_task.ports
import resilient_task.settings
from resilient_task import (
    NoRetryPolicy,
    ResilientTaskError,
    SimpleConcurrencyPolicy,
    SimpleProcessingPolicy,
    StuckTaskResolutionStrategy,
    TaskHandler,
    TaskHandlerBuilder,
    TaskStatus,
    ValidationError,
    for_types,
)
from resilient_task.cli import main
from tests.unit.helpers import Calls, FakeNode

PUBLIC_MODULES = [
    resilient_task,
    resilient_task.domain,
    resilient_task.environment,
    resilient_task.errors,
    resilient_task.ports,
    resilient_task.adapters.memory,
    resilient_task.settings,
]

ENGINE_PARTS = [
    ("resilient_task.service.executor", "TaskExecutor"),
    ("resilient_task.service.resumer", "TaskResumer"),
    ("resilient_task.service.cleaner", "TaskCleaner"),
    ("resilient_task.service.registry", "HandlerRegistry"),
    ("resilient_task.service.operator", "TaskOperator"),
    ("resilient_task.domain", "TRANSITIONS"),
    ("resilient_task.domain", "Transition"),
    ("resilient_task.domain", "FINAL_STATUSES"),
]


def _isort_key(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: CONSTANTS, then Classes, then functions."""
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_every_name_in_all_exists(module: ModuleType) -> None:
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_all_is_sorted_and_unique(module: ModuleType) -> None:
    names = list(module.__all__)
    assert len(names) == len(set(names))
    assert names == sorted(names, key=_isort_key)


def test_star_import_gives_exactly_the_public_names() -> None:
    namespace: dict[str, object] = {}
    exec("from resilient_task import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(resilient_task.__all__)


@pytest.mark.parametrize(("module", "name"), ENGINE_PARTS, ids=lambda v: v.rpartition(".")[2])
def test_engine_parts_are_importable_from_their_modules_but_not_exported(
    module: str, name: str
) -> None:
    assert hasattr(importlib.import_module(module), name)
    assert name not in resilient_task.__all__


def test_the_version_is_the_installed_one_and_the_fallback_is_pyproject_s() -> None:
    pyproject = Path(__file__).parents[2] / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["version"]
    source = Path(resilient_task.__file__).read_text()

    assert resilient_task.__version__ == importlib.metadata.version("resilient-task")
    assert f'__version__ = "{declared}"' in source


def test_the_command_line_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"resilient-task {resilient_task.__version__}\n"


def test_every_public_class_and_function_has_a_docstring() -> None:
    undocumented = [
        name
        for name in resilient_task.__all__
        if (inspect.isclass(obj := getattr(resilient_task, name)) or inspect.isfunction(obj))
        and not inspect.getdoc(obj)
    ]
    assert undocumented == []


def test_every_public_exception_is_a_resilient_task_error() -> None:
    exceptions = [
        obj
        for name in resilient_task.__all__
        if inspect.isclass(obj := getattr(resilient_task, name)) and issubclass(obj, BaseException)
    ]
    assert exceptions
    assert [e.__name__ for e in exceptions if not issubclass(e, ResilientTaskError)] == []


# --- the two ways to build a handler -------------------------------------------------------


@pytest.mark.anyio
async def test_fluent_builder_makes_a_working_handler() -> None:
    calls = Calls()
    concurrency = SimpleConcurrencyPolicy(2)
    processing = SimpleProcessingPolicy(
        timeout=timedelta(seconds=30), stuck_strategy=StuckTaskResolutionStrategy.MARK_AS_ERROR
    )
    built = (
        TaskHandlerBuilder(for_types("work"), calls)
        .with_retry_policy(NoRetryPolicy())
        .with_concurrency_policy(concurrency)
        .with_processing_policy(processing)
        .transactional()
        .named("payments")
        .build()
    )

    assert built.retry_policy == NoRetryPolicy()
    assert built.concurrency_policy is concurrency
    assert built.processing_policy == processing
    assert built.transactional
    assert built.name == "payments"
    async with FakeNode(built) as node:
        task_id = await node.add("work")
        await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 1


@pytest.mark.anyio
async def test_keyword_construction_makes_a_working_handler() -> None:
    calls = Calls()
    keyword = TaskHandler(types={"work"}, processor=calls, retry_policy=NoRetryPolicy())

    assert keyword.handles(resilient_task.BaseTask(resilient_task.uuid7(), 0, "work"))
    assert not keyword.handles(resilient_task.BaseTask(resilient_task.uuid7(), 0, "other"))
    async with FakeNode(keyword) as node:
        task_id = await node.add("work")
        await node.wait_for(task_id, TaskStatus.DONE)
    assert calls.count == 1


def test_a_single_type_given_as_a_string_is_one_type_not_its_letters() -> None:
    single = TaskHandler(types="work", processor=Calls())

    assert single.handles(resilient_task.BaseTask(resilient_task.uuid7(), 0, "work"))
    assert not single.handles(resilient_task.BaseTask(resilient_task.uuid7(), 0, "w"))


@pytest.mark.parametrize(
    "routing",
    [{}, {"types": {"work"}, "predicate": for_types("work")}],
    ids=["neither", "both"],
)
def test_handler_needs_exactly_one_of_types_or_predicate(routing: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        TaskHandler(processor=Calls(), **routing)  # type: ignore[arg-type]
