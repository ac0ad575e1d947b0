"""StoreProbe: readiness follows the store, a hanging store counts as unreachable."""

from __future__ import annotations

import logging
from uuid import UUID

import anyio
import pytest

from resilient_task.adapters.memory import InMemoryTaskDAO
from resilient_task.domain.task import Task
from resilient_task.errors import BackendUnavailableError
from resilient_task.service.health import StoreProbe

pytestmark = pytest.mark.anyio


class FlakyDAO(InMemoryTaskDAO):
    def __init__(self) -> None:
        super().__init__()
        self.mode = "up"

    async def get_task(self, task_id: UUID) -> Task | None:
        if self.mode == "down":
            raise BackendUnavailableError("connection refused")
        if self.mode == "hang":
            await anyio.sleep_forever()
        return await super().get_task(task_id)


async def test_readiness_follows_the_store_and_logs_only_the_changes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dao = FlakyDAO()
    probe = StoreProbe(dao=dao, timeout=0.2)
    assert not probe.reachable
    with caplog.at_level(logging.WARNING, "resilient_task.health"):
        assert await probe.probe()
        dao.mode = "down"
        assert not await probe.probe()
        assert not await probe.probe()
        assert "connection refused" in probe.problem
        dao.mode = "hang"
        assert not await probe.probe()
        assert "did not answer within 0.2 s" in probe.problem
        dao.mode = "up"
        assert await probe.probe()
        assert probe.problem == ""
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # the outage began, it ended (not the first success)
    assert "store unreachable" in messages[0]
    assert messages[1] == "readiness: store reachable again"
