"""The TaskDAO port is generic in its transaction handle: each store takes only its own.

Checked by mypy with the rest of the project (every ignore comment below must be
used, or mypy reports it) and by ``tests/unit/test_typed_ports.py``, which runs mypy on this
file without those comments and expects exactly the marked errors. Never imported at runtime.
"""

from __future__ import annotations

from typing import assert_type

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from resilient_task.adapters.memory.task_dao import InMemoryTaskDAO, InMemoryTransaction
from resilient_task.adapters.postgres.dao import PostgresTaskDAO
from resilient_task.ports.task_dao import TaskDAO
from resilient_task.service.context import current_transaction


def memory_store(dao: InMemoryTaskDAO) -> TaskDAO[InMemoryTransaction]:
    return dao


def postgres_store(dao: PostgresTaskDAO) -> TaskDAO[AsyncConnection]:
    return dao


def postgres_store_with_sessions(dao: PostgresTaskDAO) -> TaskDAO[AsyncConnection | AsyncSession]:
    return dao


async def each_store_takes_its_own_handle(
    memory: TaskDAO[InMemoryTransaction], postgres: TaskDAO[AsyncConnection]
) -> None:
    async with memory.transaction() as tx:
        assert_type(tx, InMemoryTransaction)
        await memory.insert_tasks([], transaction=tx)
        await memory.apply([], transaction=tx)
    async with postgres.transaction() as conn:
        assert_type(conn, AsyncConnection)
        await postgres.apply([], transaction=conn)
        await memory.insert_tasks([], transaction=conn)  # type: ignore[arg-type]
        memory.after_commit(conn, _noop)  # type: ignore[arg-type]


def a_processor_may_ask_for_its_handle_typed() -> None:
    assert_type(current_transaction(AsyncConnection), AsyncConnection)
    assert_type(current_transaction(InMemoryTransaction), InMemoryTransaction)


def the_postgres_store_is_not_an_in_memory_one(
    dao: PostgresTaskDAO,
) -> TaskDAO[InMemoryTransaction]:
    return dao  # type: ignore[return-value]


async def _noop() -> None:
    pass
