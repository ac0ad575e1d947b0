"""Row values of the PostgreSQL store, checked without a database."""

from __future__ import annotations

from dataclasses import replace

from resilient_task.adapters.postgres.codec import task_columns, task_params, task_values
from resilient_task.adapters.postgres.statements import INSERT_COLUMNS
from resilient_task.domain.task import TaskStatus
from resilient_task.testing.task_dao_contract import make_task


def test_task_columns_are_the_transposed_task_values_in_insert_order() -> None:
    tasks = [
        make_task(),
        make_task(status=TaskStatus.SUBMITTED, sub_type="s", unique_key="k", priority=1),
        replace(make_task(), last_error="bad\x00byte", processing_node="n", recovery_count=2),
    ]
    columns = task_columns(tasks, INSERT_COLUMNS)
    assert tuple(columns) == INSERT_COLUMNS
    assert columns == {c: [task_values(t)[c] for t in tasks] for c in INSERT_COLUMNS}
    assert columns["status"] == ["WAITING", "SUBMITTED", "WAITING"]
    assert all(type(s) is str for s in columns["status"])
    assert columns["last_error"][2] == "bad\\x00byte"
    assert list(task_columns(tasks, ["status", "id"])) == ["status", "id"]


def test_task_params_are_the_task_values_named_as_the_single_inserts_parameters() -> None:
    task = make_task(status=TaskStatus.SUBMITTED, sub_type="s", unique_key="k", priority=1)
    assert task_params(task) == {f"t_{c}": v for c, v in task_values(task).items()}
