"""Shared test configuration: unit tests run on both anyio backends; logging is restored."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every ``@pytest.mark.anyio`` test on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """Undo what a test's in-process command line did to the root logger.

    ``resilient-task worker`` configures logging for its process (it replaces the root's
    handlers and sets its level); run in-process by a test, that would leave a handler on a
    stream pytest closes, and a root level that changes what later tests capture.
    """
    root = logging.getLogger()
    handlers, level, filters = list(root.handlers), root.level, list(root.filters)
    yield
    # Only plain stream handlers a test's code added: pytest's own capture handlers come and go
    # with each test phase and are its to remove.
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    root.filters[:] = filters
