"""A real worker process serves /metrics, /healthz and /readyz (multi-process).

The worker runs ``resilient-task worker --metrics-port`` on PostgreSQL with NOTIFY triggers.
For readiness its store is reached through a TCP proxy this test owns: closing the proxy is
"the database went away" for that worker only (the shared PostgreSQL keeps running).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from resilient_task import (
    AddTaskRequest,
    NotifyTriggers,
    PostgresOptions,
    ResilientTask,
    TaskStatus,
)
from resilient_task.adapters.postgres import PostgresSettings
from tests.integration.metrics_app import ERROR, OK, RETRY
from tests.integration.postgres_env import isolated_schema

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def http_get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET ``path`` on 127.0.0.1:``port``; (0, reason) when it fails."""
    try:
        with anyio.fail_after(5):
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
                raw = b""
                try:
                    while True:
                        raw += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    pass
    except (OSError, TimeoutError) as exc:
        return 0, repr(exc)
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def processed(metrics: str) -> dict[tuple[str, str], float]:
    found = {}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "resilient_task_tasks_processed_total":
                found[(sample.labels["type"], sample.labels["outcome"])] = sample.value
    return found


class Proxy:
    """A TCP proxy to PostgreSQL that the test can close (cutting every connection) and reopen."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._scope: anyio.CancelScope | None = None

    async def _pipe(self, src: anyio.abc.ByteStream, dst: anyio.abc.ByteStream) -> None:
        try:
            async for chunk in src:
                await dst.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            await dst.aclose()

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        async with client:
            try:
                server = await anyio.connect_tcp(*self.target)
            except OSError:
                return
            async with server, anyio.create_task_group() as tg:
                tg.start_soon(self._pipe, client, server)
                tg.start_soon(self._pipe, server, client)

    async def _serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.CancelScope() as scope:
            self._scope = scope
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=self.port)
            async with listener:
                task_status.started()
                await listener.serve(self._handle)

    async def open(self, tg: anyio.abc.TaskGroup) -> None:
        await tg.start(self._serve)

    def close(self) -> None:
        """Stop listening and cut every proxied connection."""
        assert self._scope is not None
        self._scope.cancel()


@contextmanager
def worker(database_url: str, schema: str, metrics_port: int) -> Iterator[subprocess.Popen[str]]:
    code = (
        "import sys; from resilient_task.cli import main; sys.exit(main(['worker', '--app', "
        f"'tests.integration.metrics_app:app', '--metrics-port', '{metrics_port}']))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "RESILIENT_TASK_DATABASE_URL": database_url,
        "RESILIENT_TASK_NOTIFY": "1",
        "RESILIENT_TASK_RESUMER_POLLING_INTERVAL_S": "0.5",
        "RT_METRICS_SCHEMA": schema,
    }
    log = open(ROOT / f".metrics-worker-{metrics_port}.log", "w+")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        yield process  # type: ignore[misc]
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.seek(0)
        output = log.read()
        log.close()
        os.unlink(log.name)
        if process.returncode not in (0, -15):
            print(output)


async def wait_until(
    what: str, within: float, check: object, process: subprocess.Popen[str] | None = None
) -> float:
    """Poll the async ``check`` until it returns True; the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if await check():  # type: ignore[operator]
            return time.monotonic() - start
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{what}: the worker exited ({process.returncode})")
        await anyio.sleep(0.1)
    raise AssertionError(f"{what}: not within {within} s")


@pytest.fixture
async def schema(database_url: str) -> AsyncIterator[PostgresSettings]:
    async with isolated_schema(database_url) as settings:
        yield settings


async def test_metrics_of_a_worker_process_count_the_tasks_it_ran(
    database_url: str, schema: PostgresSettings
) -> None:
    port = free_port()
    with worker(database_url, schema.schema, port) as process:
        await wait_until("the worker is ready", 60, lambda: _status(port, "/readyz", 200), process)
        producer = ResilientTask(
            database_url=database_url,
            triggers=NotifyTriggers(),
            run_workers=False,
            postgres=PostgresOptions(schema=schema.schema),
        )
        async with producer:
            requests = (
                [AddTaskRequest(type=OK) for _ in range(5)]
                + [AddTaskRequest(type=RETRY) for _ in range(3)]
                + [AddTaskRequest(type=ERROR) for _ in range(2)]
            )
            await producer.service.add_tasks(requests)

            async def finished() -> bool:
                counts = await producer.service.count_by_status()
                return counts[TaskStatus.DONE] == 8 and counts[TaskStatus.ERROR] == 2

            await wait_until("every task finished", 60, finished)
        expected = {
            (OK, "done"): 5,
            (RETRY, "retry"): 3,
            (RETRY, "done"): 3,
            (ERROR, "error"): 2,
        }

        async def counted() -> bool:
            _, body = await http_get(port, "/metrics")
            got = {k: v for k, v in processed(body).items() if v}
            return got == expected

        await wait_until("/metrics counts the tasks run", 10, counted)
        status, body = await http_get(port, "/metrics")
        assert status == 200
        assert {k: v for k, v in processed(body).items() if v} == expected
        assert (await http_get(port, "/healthz"))[0] == 200
        assert process.poll() is None


async def _status(port: int, path: str, expected: int) -> bool:
    return (await http_get(port, path))[0] == expected


async def test_readyz_turns_unready_within_5_s_of_losing_the_store_and_ready_when_it_returns(
    database_url: str, schema: PostgresSettings
) -> None:
    url = sa.make_url(database_url)
    proxy = Proxy((url.host or "127.0.0.1", url.port or 5432))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    port = free_port()
    async with anyio.create_task_group() as tg:
        await proxy.open(tg)
        with worker(proxied, schema.schema, port) as process:
            await wait_until(
                "the worker is ready", 60, lambda: _status(port, "/readyz", 200), process
            )
            proxy.close()
            took = await wait_until("unready", 5, lambda: _status(port, "/readyz", 503))
            status, body = await http_get(port, "/readyz")
            assert status == 503, body
            assert body.startswith("not ready: store")
            assert (await http_get(port, "/healthz"))[0] == 200  # alive, only not ready
            await proxy.open(tg)
            await wait_until("ready again", 30, lambda: _status(port, "/readyz", 200))
            assert process.poll() is None
            assert took < 5
        tg.cancel_scope.cancel()
