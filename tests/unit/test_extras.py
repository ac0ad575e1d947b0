"""The core installs with anyio and punq only: drivers are imported when their extra is used.

Each test runs a fresh Python in which importing SQLAlchemy, psycopg, aiokafka,
prometheus-client or Starlette fails, as it does where the extras are not installed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from resilient_task.extras import EXTRAS

_BLOCKER = """
import importlib.abc, sys

BLOCKED = {blocked!r}

class _NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def _run_without_extras(code: str) -> subprocess.CompletedProcess[str]:
    blocked = sorted({package for packages in EXTRAS.values() for package in packages})
    script = _BLOCKER.format(blocked=blocked) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_in_memory_node_runs_a_task_without_any_extra() -> None:
    done = _run_without_extras(
        """
        import anyio
        import resilient_task
        from resilient_task import AddTaskRequest, ProcessResult, ResilientTask, TaskHandler
        from resilient_task.adapters.memory import InMemoryTaskDAO

        async def work(task):
            return ProcessResult.DONE

        async def main():
            dao = InMemoryTaskDAO()
            handler = TaskHandler(types={"work"}, processor=work)
            async with ResilientTask(handlers=[handler], dao=dao) as app:
                added = await app.service.add_task(AddTaskRequest(type="work"))
                with anyio.fail_after(10):
                    while dao.tasks[added.task_id].status.name != "DONE":
                        await anyio.sleep(0.01)
                print((await app.operator.count()).by_status[resilient_task.TaskStatus.DONE])

        anyio.run(main)
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
        print("drivers loaded:", loaded)
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["1", "drivers loaded: []"]


def test_the_demo_runs_without_any_extra() -> None:
    done = _run_without_extras(
        """
        from resilient_task.cli import main
        sys.exit(main(["demo"]))
        """
    )
    assert done.returncode == 0, done.stderr
    assert "demo succeeded" in done.stdout


def test_asking_for_postgresql_kafka_or_metrics_without_its_extra_names_the_extra() -> None:
    done = _run_without_extras(
        """
        from resilient_task import ConfigurationError, ResilientTask
        from resilient_task.settings import KafkaTriggers, NotifyTriggers

        for settings in (
            {"database_url": "postgresql+psycopg://db/tasks"},
            {"database_url": "postgresql+psycopg://db/tasks", "triggers": NotifyTriggers()},
            {"triggers": KafkaTriggers()},
        ):
            try:
                ResilientTask(**settings)
            except ConfigurationError as exc:
                print(exc)
            else:
                print("accepted", settings)

        from resilient_task.cli import main
        from resilient_task.worker import run_worker

        try:
            run_worker("app:node", app=ResilientTask(), metrics_port=0)
        except ConfigurationError as exc:
            print(exc)
        sys.exit(main(["db", "sql"]))
        """
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'resilient-task[postgres]'" in done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4
    assert "pip install 'resilient-task[postgres]'" in lines[0]
    assert "pip install 'resilient-task[postgres]'" in lines[1]
    assert "pip install 'resilient-task[kafka]'" in lines[2]
    assert "--metrics-port needs the 'metrics' extra" in lines[3]
