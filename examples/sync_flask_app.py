r"""A Flask application that stores an order and the task that ships it in ONE transaction.

``POST /orders`` with ``{"id": "o-1", "amount_cents": 1250}`` inserts the order and adds a
``ship-order`` task with :mod:`resilient_task.sync` inside the same SQLAlchemy session
transaction: both commit, or (an error, a refused order) neither does. The order id is the
task's unique key, so posting the same order again adds nothing and answers with the task
already there. Workers are ordinary ``ResilientTask`` nodes listening with NOTIFY.

Try it (PostgreSQL running, schema created with ``resilient-task db upgrade``)::

    export RESILIENT_TASK_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test
    python examples/sync_flask_app.py worker &          # a worker node (NOTIFY triggers)
    flask --app examples/sync_flask_app.py run          # the web application
    curl -X POST localhost:5000/orders -H 'content-type: application/json' \\
         -d '{"id": "o-1", "amount_cents": 1250}'
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

import sqlalchemy as sa
from flask import Flask, request
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from resilient_task import (
    AddTaskRequest,
    AddTaskResultCode,
    NotifyTriggers,
    PostgresOptions,
    Processor,
    ProcessResult,
    ResilientTask,
    Task,
    TaskHandler,
    ValidationError,
)
from resilient_task.adapters.postgres import PostgresSettings
from resilient_task.sync import TaskAdder

CREDIT_LIMIT_CENTS = 1_000_000
log = logging.getLogger("example.orders")


class OrderRefusedError(Exception):
    """The order breaks a business rule: nothing of it may be stored."""


def orders_table(settings: PostgresSettings) -> sa.Table:
    """The application's own table, beside resilient-task's."""
    return sa.Table(
        "shop_orders",
        sa.MetaData(schema=settings.schema),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
    )


def create_app(
    database_url: str | None = None, *, settings: PostgresSettings | None = None
) -> Flask:
    """The web application (``flask --app`` calls it without arguments)."""
    url = database_url or os.environ["RESILIENT_TASK_DATABASE_URL"]
    settings = settings or PostgresSettings()
    engine = sa.create_engine(url)
    orders = orders_table(settings)
    orders.metadata.create_all(engine)
    adder = TaskAdder(triggers="notify", settings=settings)  # one per application
    app = Flask(__name__)
    app.extensions["engine"] = engine  # dispose() of it when the application is done

    @app.post("/orders")
    def place_order() -> tuple[dict[str, Any], int]:
        body = request.get_json(force=True)
        try:
            with Session(engine) as session, session.begin():
                session.execute(
                    insert(orders)
                    .values(id=body["id"], amount_cents=body["amount_cents"])
                    .on_conflict_do_nothing()
                )
                added = adder.add_task(
                    session,
                    AddTaskRequest(
                        type="ship-order", data=json.dumps(body).encode(), unique_key=body["id"]
                    ),
                )
                if body["amount_cents"] > CREDIT_LIMIT_CENTS:
                    # Found out after the writes: the rollback takes the order AND the task.
                    raise OrderRefusedError(f"{body['amount_cents']} is over the credit limit")
        except (OrderRefusedError, ValidationError) as exc:
            return {"error": str(exc)}, 400
        # Committed: a worker runs the task, whatever happens to this process from now on.
        new = added.result is AddTaskResultCode.OK
        return {"task_id": str(added.task_id), "result": added.result.value}, 201 if new else 200

    return app


async def ship_order(task: Task) -> ProcessResult:
    """The worker's processor: ship the order (here: log it)."""
    order = json.loads(task.data)
    log.info("shipping order %s", order["id"])
    return ProcessResult.DONE


def create_worker(
    database_url: str | None = None,
    *,
    settings: PostgresSettings | None = None,
    processor: Processor = ship_order,
    **options: Any,
) -> ResilientTask:
    """A worker node for ``ship-order`` tasks, triggered by NOTIFY."""
    settings = settings or PostgresSettings()
    return ResilientTask(
        handlers=[TaskHandler(types={"ship-order"}, processor=processor)],
        database_url=database_url or os.environ["RESILIENT_TASK_DATABASE_URL"],
        triggers=NotifyTriggers(),
        postgres=PostgresOptions(schema=settings.schema, prefix=settings.prefix),
        **options,
    )


async def _run_worker() -> None:
    async with create_worker():
        await asyncio.Event().wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    if sys.argv[1:] == ["worker"]:
        asyncio.run(_run_worker())
    else:
        create_app().run()
