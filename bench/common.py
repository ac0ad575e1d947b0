"""Shared pieces: configuration, the no-op handler, node factories, schemas, child processes."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TASK_TYPE = "bench"
WARMUP_TYPE = "bench_warmup"
PAYLOAD = json.dumps({"order": 123456, "amount": "42.00", "currency": "EUR", "pad": "x" * 40})
PAYLOAD_BYTES = PAYLOAD.encode()  # ~100 bytes: stored raw in task_data (below compression)
TABLE = "resilient_task_tasks"  # default prefix


@dataclass
class Config:
    """What every process of one run needs; passed to children as JSON."""

    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    kafka_bootstrap: str = "127.0.0.1:9092"
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL as a plain libpq one (for psycopg and pgbench)."""
    import sqlalchemy as sa

    url = sa.make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def pg_connect(database_url: str) -> Any:
    import psycopg

    return psycopg.connect(libpq_url(database_url), autocommit=True)


# --- schemas ----------------------------------------------------------------------------------
def schema_name(cfg: Config, section: str) -> str:
    return f"bench_{cfg.run_id}_{section}"


async def create_schema(cfg: Config, schema: str) -> None:
    from resilient_task.adapters.postgres import upgrade

    await upgrade(cfg.database_url, schema=schema)


def drop_schema(cfg: Config, schema: str) -> None:
    with pg_connect(cfg.database_url) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def stale_schemas(cfg: Config, *, drop: bool) -> list[str]:
    """Schemas of other runs (``bench_<8 hex>_*``): left by interrupted runs, or still in use."""
    with pg_connect(cfg.database_url) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname ~ '^bench_[0-9a-f]{8}_'"
        ).fetchall()
        if drop:
            for (name,) in rows:
                conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    return [r[0] for r in rows]


def status_counts(conn: Any, schema: str) -> dict[str, int]:
    rows = conn.execute(
        f'SELECT status, count(*) FROM "{schema}".{TABLE} WHERE type = %s GROUP BY status',
        (TASK_TYPE,),
    ).fetchall()
    return {s: int(n) for s, n in rows}


def done_count(conn: Any, schema: str) -> int:
    return int(
        conn.execute(
            f"SELECT count(*) FROM \"{schema}\".{TABLE} WHERE status = 'DONE' AND type = %s",
            (TASK_TYPE,),
        ).fetchone()[0]
    )


def verify_db(conn: Any, schema: str, n: int) -> dict[str, Any]:
    """N DONE rows of the bench type, each run exactly once (processing_tries_count = 1)."""
    row = conn.execute(
        f"""SELECT count(*),
                   count(*) FILTER (WHERE status = 'DONE'),
                   count(*) FILTER (WHERE status = 'DONE' AND processing_tries_count = 1),
                   coalesce(max(processing_tries_count), 0),
                   count(*) FILTER (WHERE recovery_count > 0)
            FROM "{schema}".{TABLE} WHERE type = %s""",
        (TASK_TYPE,),
    ).fetchone()
    total, done, once, max_tries, recovered = (int(x) for x in row)
    return {
        "rows": total,
        "done": done,
        "done_tried_once": once,
        "max_tries": max_tries,
        "recovered": recovered,
        "ok": total == n and done == n and once == n,
    }


# --- nodes (imported lazily: the parent process stays light) --------------------------------
def properties(cfg: Config, namespace: str, group: str) -> Any:
    from resilient_task import KafkaProperties, TaskProperties

    return TaskProperties(
        kafka=KafkaProperties(
            bootstrap_servers=cfg.kafka_bootstrap,
            topics_namespace=namespace,
            consumer_group_id=group,
        )
    )


def node(
    cfg: Config,
    mode: str,
    *,
    schema: str | None,
    namespace: str,
    group: str,
    handlers: Any = (),
    run_workers: bool,
) -> Any:
    """A ResilientTask for ``mode``, otherwise defaults.

    Modes: memory | postgres (database polling only) | postgres_kafka | postgres_notify
    (triggers through PostgreSQL LISTEN/NOTIFY).
    """
    from resilient_task import KafkaTriggers, NotifyTriggers, PostgresOptions, ResilientTask

    if mode == "memory":
        return ResilientTask(handlers=handlers, run_workers=run_workers, in_memory=True)
    triggers = {"postgres_kafka": KafkaTriggers(), "postgres_notify": NotifyTriggers()}
    return ResilientTask(
        handlers=handlers,
        properties=properties(cfg, namespace, group),
        database_url=cfg.database_url,
        triggers=triggers.get(mode),
        run_workers=run_workers,
        postgres=PostgresOptions() if schema is None else PostgresOptions(schema=schema),
    )


# --- child processes --------------------------------------------------------------------------
class Child:
    """A ``python -m bench.<module>`` child in its own process group; killed on exit."""

    def __init__(self, module: str, args: dict[str, Any], *, log: Path) -> None:
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"bench.{module}", json.dumps(args)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_line(self, expected: str, timeout: float) -> None:
        """Wait for a line on the child's stdout (e.g. READY); raise with its log otherwise."""
        import selectors

        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
                line = self.proc.stdout.readline()
                if not line:
                    break
                if line.strip() == expected:
                    return
            elif self.proc.poll() is not None:
                break
        raise RuntimeError(
            f"bench.{self.describe()} did not print {expected} within {timeout}s "
            f"(exit {self.proc.poll()}); log:\n{self.tail()}"
        )

    def describe(self) -> str:
        return " ".join(self.proc.args[2:3]) if isinstance(self.proc.args, list) else "child"

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float) -> int | None:
        """SIGTERM (graceful: the child writes its results), wait, then kill."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)
        return self.kill()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(
                f"bench child did not finish within {timeout}s; log:\n{self.tail()}"
            ) from None

    def kill(self) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def monitored(app: Any, enabled: bool) -> Any:
    """``NodeMonitoring(app, port=0)`` when ``enabled`` (metrics on), else a no-op context.

    Build it before the node starts (it sets the node's observer); enter it after the node.
    """
    if not enabled:
        return contextlib.nullcontext()
    from resilient_task.monitoring import NodeMonitoring

    return NodeMonitoring(app, port=0)


@contextlib.contextmanager
def children() -> Iterator[list[Child]]:
    """Every child appended to the list is killed when the block ends, whatever happened."""
    procs: list[Child] = []
    try:
        yield procs
    finally:
        for child in procs:
            child.kill()


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size (VmRSS) in MB from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 / p99 / max (nearest-rank) of ``values``, rounded to 0.01."""
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "count": 0}
    s = sorted(values)

    def rank(p: float) -> float:
        k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
        return s[k]

    return {
        "p50": round(rank(50), 2),
        "p99": round(rank(99), 2),
        "max": round(s[-1], 2),
        "min": round(s[0], 2),
        "count": len(s),
    }


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_json(path: Path | str, data: Any) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def child_main(entry: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """A child process's entry point: WARNING logging, then ``entry`` with the JSON argument."""
    import logging

    import anyio

    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    anyio.run(entry, json.loads(sys.argv[1]), backend_options=backend_options())


def backend_options() -> dict[str, Any]:
    """anyio's asyncio options: uvloop when ``BENCH_UVLOOP=1`` (``--uvloop``), else none."""
    return {"use_uvloop": True} if os.environ.get("BENCH_UVLOOP") == "1" else {}
