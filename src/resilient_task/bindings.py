"""Which adapter serves each port of a node: yours, registered by port, or the default.

:class:`~resilient_task.ResilientTask` keeps one :class:`AdapterBindings`; when the node
starts, :meth:`AdapterBindings.open` makes the adapter of every port of :data:`PORTS` and
the composition root registers each in its container under that port.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass

from resilient_task.adapter_defaults import DefaultAdapters
from resilient_task.errors import ConfigurationError
from resilient_task.ports.clock import Clock
from resilient_task.ports.observer import Observer
from resilient_task.ports.task_dao import TaskDAO
from resilient_task.ports.task_queries import TaskQueries
from resilient_task.ports.triggerer import Triggerer

__all__ = ["PORTS", "AdapterBindings", "Binding"]

PORTS: tuple[type, ...] = (Clock, Observer, TaskDAO, Triggerer, TaskQueries)
"""The ports an adapter can be registered for, in the order a starting node opens them."""


@dataclass(frozen=True, slots=True)
class Binding:
    """A registered adapter: an instance you own, or a factory whose product the node owns."""

    instance: object | None = None
    factory: Callable[[], object] | None = None


class AdapterBindings:
    """The adapters registered for a node's ports; the rest get their defaults."""

    def __init__(self) -> None:
        self._bindings: dict[type, Binding] = {}

    def bind(
        self, port: type, adapter: object | None, factory: Callable[[], object] | None
    ) -> None:
        """Bind ``port`` to ``adapter`` or ``factory``, replacing any earlier binding.

        Raises:
            ConfigurationError: ``port`` is not one of :data:`PORTS`, not exactly one of
                ``adapter`` and ``factory`` is given, or ``adapter`` lacks a method of the port.
        """
        if port not in PORTS:
            names = ", ".join(p.__name__ for p in PORTS)
            raise ConfigurationError(f"{port!r} is not a port; adapters are for: {names}")
        if (adapter is None) == (factory is None):
            raise ConfigurationError(f"register({port.__name__}, ...) takes an adapter or factory=")
        if adapter is not None:
            missing = [name for name in _methods(port) if not hasattr(adapter, name)]
            if missing:
                raise ConfigurationError(
                    f"{type(adapter).__name__} is no {port.__name__}: it lacks {', '.join(missing)}"
                )
        elif not callable(factory):
            raise ConfigurationError(f"factory= must be callable, got {factory!r}")
        self._bindings[port] = Binding(adapter, factory)

    def get(self, port: type) -> Binding | None:
        """What is registered for ``port`` (None: the default adapter)."""
        return self._bindings.get(port)

    async def open(self, stack: AsyncExitStack, defaults: DefaultAdapters) -> dict[type, object]:
        """The adapter of every port that has one, in :data:`PORTS` order, opened on ``stack``.

        A factory's product that is an async context manager is entered on ``stack``.
        """
        opened: dict[type, object] = {}
        for port in PORTS:
            binding = self._bindings.get(port)
            if binding is None:
                adapter = await defaults.open(port, stack, opened)
            elif binding.factory is not None:
                adapter = await _enter(stack, binding.factory())
            else:
                adapter = binding.instance
            if adapter is not None:
                opened[port] = adapter
        return opened


async def _enter(stack: AsyncExitStack, made: object) -> object:
    if isinstance(made, AbstractAsyncContextManager) or (
        hasattr(made, "__aenter__") and hasattr(made, "__aexit__")
    ):
        return await stack.enter_async_context(made)
    return made


def _methods(port: type) -> list[str]:
    """The methods a Protocol port declares (what an adapter must have)."""
    return [name for name, value in vars(port).items() if callable(value) and name[0] != "_"]
