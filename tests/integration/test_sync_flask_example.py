"""examples/sync_flask_app.py through Flask's test client, with a worker node running."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal

from resilient_task import ProcessResult, Task
from resilient_task.adapters.postgres import PostgresSettings
from tests.integration.test_sync_add import (
    SLOW_POLL,
    WAIT,
    portal,
    rows,
    schema,
    tasks_table,
)

__all__ = ["portal", "schema"]  # fixtures shared with test_sync_add

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sync_flask_app", "examples/sync_flask_app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Shipped:
    def __init__(self) -> None:
        self.orders: list[bytes] = []
        self._changed = threading.Condition()

    async def ship(self, task: Task) -> ProcessResult:
        with self._changed:
            self.orders.append(task.data)
            self._changed.notify_all()
        return ProcessResult.DONE

    def wait(self, count: int) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self.orders) >= count, WAIT)


@pytest.fixture
def shipped(
    example: ModuleType, portal: BlockingPortal, database_url: str, schema: PostgresSettings
) -> Iterator[Shipped]:
    """A running worker node of the example, recording what it ships."""
    recorder = Shipped()
    worker = example.create_worker(
        database_url, settings=schema, processor=recorder.ship, properties=SLOW_POLL
    )
    with portal.wrap_async_context_manager(worker):
        yield recorder


def post(client: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    response = client.post("/orders", json=body)
    return response.status_code, response.get_json()


def test_the_flask_example_commits_orders_and_their_tasks_together(
    example: ModuleType, database_url: str, schema: PostgresSettings, shipped: Shipped
) -> None:
    app = example.create_app(database_url, settings=schema)
    try:
        check_orders(app.test_client(), database_url, schema, shipped)
    finally:
        app.extensions["engine"].dispose()


def check_orders(
    client: Any, database_url: str, schema: PostgresSettings, shipped: Shipped
) -> None:

    status, placed = post(client, {"id": "o-1", "amount_cents": 1250})
    assert (status, placed["result"]) == (201, "OK")
    assert shipped.wait(1)  # NOTIFY at commit; the worker's poll is 30 s away
    assert [json.loads(order) for order in shipped.orders] == [{"id": "o-1", "amount_cents": 1250}]

    status, again = post(client, {"id": "o-1", "amount_cents": 1250})
    assert (status, again) == (200, {"task_id": placed["task_id"], "result": "ALREADY_EXISTS"})

    status, refused = post(client, {"id": "o-2", "amount_cents": 10**9})
    assert status == 400
    assert "credit limit" in refused["error"]

    status, invalid = post(client, {"id": "o" * 151, "amount_cents": 1})
    assert status == 400
    assert "unique_key" in invalid["error"]

    # Only o-1 exists, as an order and as a task: the refused ones left nothing behind.
    assert rows(database_url, f'SELECT id FROM "{schema.schema}".shop_orders') == [("o-1",)]
    assert rows(database_url, f"SELECT unique_key FROM {tasks_table(schema)}") == [("o-1",)]
