"""Adding tasks from synchronous code (Django, Flask, any WSGI app), in the caller's transaction.

::

    from resilient_task import AddTaskRequest
    from resilient_task.sync import TaskAdder

    adder = TaskAdder(triggers="notify")          # once per application

    with engine.begin() as conn:                  # or a Session, or a psycopg connection
        conn.execute(orders.insert().values(...))
        adder.add_task(conn, AddTaskRequest(type="ship-order", data=b"..."))
    # committed together: both rows exist, or neither does

No event loop is needed. The add is :meth:`TaskService.add_task
<resilient_task.TaskService.add_task>` itself, run over the caller's connection, so the
validation, the deduplication, the errors and the result are the asynchronous service's. How
workers hear of the task (``triggers``) and what a web process must configure: ``docs/sync.md``.
"""

from resilient_task.sync.adder import TaskAdder, Triggers, add_task, add_tasks

__all__ = ["TaskAdder", "Triggers", "add_task", "add_tasks"]
