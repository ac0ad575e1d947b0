"""The measured sections (parent side). Each runs in a fresh schema / topic namespace / group."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from bench import breakdown, cpu
from bench.common import (
    PAYLOAD_BYTES,
    TASK_TYPE,
    Child,
    Config,
    children,
    create_schema,
    done_count,
    drop_schema,
    node,
    percentiles,
    pg_connect,
    read_json,
    rss_mb,
    schema_name,
    status_counts,
    verify_db,
)

MODES = ("memory", "postgres", "postgres_kafka", "postgres_notify")
TRIGGERED = ("postgres_kafka", "postgres_notify")
"""Modes whose producer sends triggers: it warms up first (connections, consumer group)."""


@dataclass
class Run:
    """Settings of the whole run, shared by the sections."""

    cfg: Config
    n: int
    batch: int
    latency_n: int
    scheduled_n: int
    rss_n: int
    rss_modes: tuple[str, ...]
    workdir: Path
    profile_dir: Path | None = None
    concurrency: int | None = None  # handler concurrency; None = the library default
    breakdown: bool = False  # instrument the latency workers (diagnosis only)
    log: Any = print
    backend_options: dict[str, Any] | None = None  # anyio's, for the parent's own event loops

    def names(self, section: str, mode: str) -> dict[str, str]:
        """Fresh names on every call: a retried section never meets an earlier attempt's data."""
        tag = f"{section}_{mode}_{uuid.uuid4().hex[:4]}"
        return {
            "schema": schema_name(self.cfg, tag),
            "namespace": f"bench{self.cfg.run_id}.{tag}",
            "group": f"bench-{self.cfg.run_id}-{tag}",
        }


@contextlib.contextmanager
def fresh_schema(run: Run, schema: str) -> Iterator[None]:
    with pg_connect(run.cfg.database_url) as conn:
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone():
            raise RuntimeError(f"schema {schema} exists already: refusing to reuse its rows")
    anyio.run(create_schema, run.cfg, schema)
    try:
        yield
    finally:
        drop_schema(run.cfg, schema)


@contextlib.contextmanager
def profiled(run: Run, pid: int, name: str) -> Iterator[None]:
    """With --profile: py-spy records ``pid`` while the block runs (collapsed stacks + SVG)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if run.profile_dir is None or not Path(py_spy).exists():
        yield
        return
    run.profile_dir.mkdir(parents=True, exist_ok=True)
    raw = run.profile_dir / f"{name}.txt"
    proc = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--format", "raw", "-o", str(raw), "-r", "500",
         "--nonblocking", "--full-filenames"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield
    finally:
        proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# --- 1. add throughput ------------------------------------------------------------------------
ADD_MODES = ("postgres", "postgres_notify", "postgres_kafka")


def add_throughput(run: Run) -> dict[str, Any]:
    """N single adds (each committed before the next) and N bulk adds, run_workers=False.

    Besides the rate: the adding process's CPU per task (``cpu_us``) and its PostgreSQL
    backends' CPU per task (``postgres_cpu_us``).
    """
    out: dict[str, Any] = {}
    for mode in ADD_MODES:
        names = run.names("add", mode)
        out[mode] = {"batch": run.batch}
        with fresh_schema(run, names["schema"]):
            for kind in ("single", "bulk"):
                with profiled(run, os.getpid(), f"add-{kind}-{mode}"):
                    rate, costs = anyio.run(
                        _adds, run, mode, names, kind, backend_options=run.backend_options
                    )
                out[mode][kind] = rate
                out[mode][f"{kind}_cpu_us"] = costs
        run.log(f"  add {mode}: {out[mode]}")
    return out


async def _adds(run: Run, mode: str, names: dict[str, str], kind: str) -> tuple[int, Any]:
    """Adds per second. A fresh node per measurement: its untaken trigger queue starts empty."""
    from resilient_task import AddTaskRequest

    async with node(run.cfg, mode, run_workers=False, **names) as app:
        add = app.service
        # warm-up: pool, prepared statements, the Kafka producer and topic
        await add.add_tasks([AddTaskRequest(type="bench_warmup", data=PAYLOAD_BYTES)] * 50)
        for _ in range(50):
            await add.add_task(AddTaskRequest(type="bench_warmup", data=PAYLOAD_BYTES))
        with pg_connect(run.cfg.database_url) as conn, anyio.fail_after(600):
            meter = cpu.Meter(conn, {"client": os.getpid()})
            meter.start()
            process = time.process_time()
            started = time.perf_counter()
            if kind == "single":
                for _ in range(run.n):
                    await add.add_task(AddTaskRequest(type=TASK_TYPE, data=PAYLOAD_BYTES))
            else:
                for start in range(0, run.n, run.batch):
                    size = min(run.batch, run.n - start)
                    await add.add_tasks(
                        [AddTaskRequest(type=TASK_TYPE, data=PAYLOAD_BYTES) for _ in range(size)]
                    )
            seconds = time.perf_counter() - started
            process = time.process_time() - process
            used = meter.stop()
            return round(run.n / seconds), {
                "client": cpu.per_task_us(process, run.n),
                "postgres": cpu.per_task_us(used["client_postgres"], run.n),
            }


# --- 2. end to end ----------------------------------------------------------------------------
def e2e_timeout(run: Run, mode: str) -> float:
    # postgres: tasks are found by the worker's polling (every 2 s, 1000 per claim): slower.
    base = 90.0 if mode != "postgres" else 120.0 + run.n / 1000 * 4
    return base + run.n / 100


def end_to_end(run: Run, mode: str, metrics: bool = False) -> dict[str, Any]:
    """N tasks added and run; ``metrics``: the worker serves Prometheus metrics meanwhile."""
    if mode == "memory":
        args = {"n": run.n, "batch": run.batch, "metrics": metrics}
        return _inproc(run, "e2e", args, e2e_timeout(run, mode))
    names = run.names("e2e", mode)
    timeout = e2e_timeout(run, mode)
    with (
        fresh_schema(run, names["schema"]),
        children() as procs,
        pg_connect(run.cfg.database_url) as conn,
    ):
        worker = _start_worker(run, procs, mode, names, "e2e", track_ids=True, metrics=metrics)
        producer = _child(
            run, procs, "producer", f"e2e-{mode}-producer",
            {"mode": mode, **names, "kind": "e2e", "n": run.n, "batch": run.batch,
             "warmup": mode in TRIGGERED},
        )  # fmt: skip
        producer.wait_line("START", 120)  # warmed up; adding now
        meter = cpu.Meter(conn, {"worker": worker.pid})  # the producer reads its own
        meter.start()
        with profiled(run, worker.pid, f"e2e-{mode}-worker"):
            t_done = _wait_done(conn, names["schema"], run.n, timeout, worker, producer)
        used = meter.stop()
        producer.wait(60)
        produced = read_json(producer.results)
        worked = _stop_worker(worker)
        db = verify_db(conn, names["schema"], run.n)
    seconds = t_done - produced["t_first_add"]
    return {
        "per_s": round(run.n / seconds),
        "seconds": round(seconds, 3),
        "add_seconds": round(produced["t_last_add"] - produced["t_first_add"], 3),
        "db": db,
        "worker": worked,
        "cpu_s": {**used, "producer": round(produced["cpu_s"], 3)},
        "cpu_us_per_task": _per_task({**used, "producer": produced["cpu_s"]}, run.n),
        "exactly_once": _exactly_once(db, worked, run.n),
    }


def _per_task(used: dict[str, float], n: int) -> dict[str, float]:
    return {name: cpu.per_task_us(seconds, n) for name, seconds in used.items()}


def _exactly_once(db: dict[str, Any], worked: dict[str, Any], n: int) -> bool:
    return bool(
        db["ok"]
        and worked["duplicate_executions"] == 0
        and worked["executions"] == n
        and worked.get("distinct") in (None, n)
    )


# --- 2b. drain --------------------------------------------------------------------------------
DRAIN_MODES = ("postgres", "postgres_notify", "postgres_kafka")


def drain(run: Run, mode: str) -> dict[str, Any]:
    """One worker drains a queue pre-filled with N due tasks; clock from its first handler call.

    The queue is filled before the worker starts, by a poll-only node (every task SUBMITTED
    and already overdue, no trigger sent), so in every mode the worker finds the tasks by its
    own database poll (``postgres_notify`` also by its catch-up read when LISTEN starts); the
    mode names the worker's trigger transport, which runs (and costs CPU) meanwhile. The
    rate is N / (the parent sees N DONE rows - the first handler call). CPU: the worker's
    process time from its first handler call until then, and its PostgreSQL backends'.
    """
    names = run.names("drain", mode)
    timeout = 120.0 + run.n / 100
    with (
        fresh_schema(run, names["schema"]),
        children() as procs,
        pg_connect(run.cfg.database_url) as conn,
    ):
        anyio.run(_prefill, run, names, backend_options=run.backend_options)
        worker = _start_worker(run, procs, mode, names, "drain", track_ids=True)
        meter = cpu.Meter(conn, {"worker": worker.pid})
        meter.start()
        with profiled(run, worker.pid, f"drain-{mode}-worker"):
            t_done = _wait_done(conn, names["schema"], run.n, timeout, worker, None)
        worker_cpu_end = cpu.process_seconds(worker.pid)
        used = meter.stop()
        worked = _stop_worker(worker)
        db = verify_db(conn, names["schema"], run.n)
    first, first_cpu = worked["first_start"], worked["first_cpu"]
    seconds = t_done - first
    used["worker_since_ready"] = used["worker"]
    used["worker"] = round(worker_cpu_end - first_cpu, 3)
    return {
        "per_s": round(run.n / seconds),
        "seconds": round(seconds, 3),
        "worker": worked,
        "db": db,
        "cpu_s": used,
        "cpu_us_per_task": _per_task(used, run.n),
        "exactly_once": _exactly_once(db, worked, run.n),
    }


async def _prefill(run: Run, names: dict[str, str]) -> None:
    from resilient_task import AddTaskRequest

    async with node(run.cfg, "postgres", run_workers=False, **names) as app:
        for start in range(0, run.n, run.batch):
            size = min(run.batch, run.n - start)
            await app.service.add_tasks(
                [AddTaskRequest(type=TASK_TYPE, data=PAYLOAD_BYTES) for _ in range(size)]
            )


# --- 3. latency -------------------------------------------------------------------------------
def latency(run: Run, mode: str) -> dict[str, Any]:
    n = run.latency_n
    if mode == "memory":
        res = _inproc(run, "latency", {"n": n, "interval": 0.02}, 120)
        adds, starts, worked = res["adds"], res["worker"]["starts"], res["worker"]
        db, calls, called = res["db"], res["add_call_ms"], res["called"]
    else:
        names = run.names("latency", mode)
        timeout = 60.0 + (90.0 if mode == "postgres" else 0.0)
        with (
            fresh_schema(run, names["schema"]),
            children() as procs,
            pg_connect(run.cfg.database_url) as conn,
        ):
            worker = _start_worker(run, procs, mode, names, "latency", track_ids=True,
                                   with_starts=True, breakdown=run.breakdown)  # fmt: skip
            producer = _child(
                run, procs, "producer", f"latency-{mode}-producer",
                {"mode": mode, **names, "kind": "latency", "n": n, "interval": 0.02,
                 "warmup": mode in TRIGGERED},
            )  # fmt: skip
            with profiled(run, worker.pid, f"latency-{mode}-worker"):
                producer.wait(120)
                _wait_done(conn, names["schema"], n, timeout, worker, None)
            worked = _stop_worker(worker)
            db = verify_db(conn, names["schema"], n)
        produced = read_json(producer.results)
        adds, calls, starts = produced["adds"], produced["add_call_ms"], worked.pop("starts")
        called = produced["called"]
        marks = worked.pop("marks", None)
    worked.pop("starts", None)
    # From just before the add_task call to the handler's start (the definition);
    # ``from_return`` starts the clock when add_task returned instead.
    values = [(starts[i] - t) * 1000 for i, t in called.items() if i in starts]
    stats = percentiles(values)
    stats["from_return"] = percentiles(
        [(starts[i] - t) * 1000 for i, t in adds.items() if i in starts]
    )
    stats["missing"] = len(adds) - len(values)
    stats["negative"] = sum(1 for v in values if v < 0)
    stats["exactly_once"] = _exactly_once(db, worked, n)
    stats["add_task_call_ms"] = percentiles(calls)  # add_task itself: commit (+ trigger send)
    if mode != "memory" and marks:
        stats["breakdown"] = breakdown.summarise(adds, starts, marks)
    return stats


# --- 4. scheduled lateness --------------------------------------------------------------------
def scheduled(run: Run, mode: str = "postgres") -> dict[str, Any]:
    n = run.scheduled_n
    names = run.names("scheduled", mode)
    with (
        fresh_schema(run, names["schema"]),
        children() as procs,
        pg_connect(run.cfg.database_url) as conn,
    ):
        worker = _start_worker(run, procs, mode, names, "scheduled", track_ids=True,
                               with_starts=True)  # fmt: skip
        producer = _child(
            run, procs, "producer", f"scheduled-{mode}-producer",
            {"mode": mode, **names, "kind": "scheduled", "n": n, "delay": 3.0},
        )  # fmt: skip
        producer.wait(60)
        _wait_done(conn, names["schema"], n, 60, worker, None)
        worked = _stop_worker(worker)
        db = verify_db(conn, names["schema"], n)
    produced = read_json(producer.results)
    run_after = produced["run_after"]
    values = [(t - run_after) * 1000 for t in worked.pop("starts").values()]
    stats = percentiles(values)
    stats["mode"] = mode
    stats["added_before_due_ms"] = round((run_after - produced["t_added"]) * 1000)
    stats["exactly_once"] = _exactly_once(db, worked, n)
    return stats


# --- 5. memory --------------------------------------------------------------------------------
def memory(run: Run, mode: str) -> dict[str, Any]:
    warm = min(10_000, run.rss_n // 10)
    timeout = 120.0 + run.rss_n / 100
    if mode == "memory":
        res = _inproc(run, "rss", {"n": run.rss_n, "batch": run.batch, "warm": warm}, timeout)
        samples = res.pop("samples", [])
        step = run.rss_n // 10
        res["rss_by_decile_mb"] = (
            [
                round(
                    next((rss for _, count, rss in samples if count >= k * step), samples[-1][2]), 1
                )
                for k in range(1, 11)
            ]
            if samples
            else []
        )
        res.pop("worker", None)
        res["handler_result"] = "DONE_AND_DELETE"
        return res
    names = run.names("rss", mode)
    with (
        fresh_schema(run, names["schema"]),
        children() as procs,
        pg_connect(run.cfg.database_url) as conn,
    ):
        worker = _start_worker(run, procs, mode, names, "rss", track_ids=False)
        out: dict[str, Any] = {"rss_start_mb": rss_mb(worker.pid)}
        producer = _child(
            run, procs, "producer", f"rss-{mode}-producer",
            {"mode": mode, **names, "kind": "e2e", "n": run.rss_n, "batch": run.batch,
             "warmup": mode in TRIGGERED},
        )  # fmt: skip
        peak = out["rss_start_mb"]
        deadline = time.monotonic() + timeout
        profile = profiled(run, worker.pid, f"rss-{mode}-worker")
        profile.__enter__()
        last_poll = 0.0
        done = 0
        trajectory: list[float] = []  # RSS (MB) when 10%, 20% ... of the tasks were DONE
        while done < run.rss_n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"rss {mode}: {done}/{run.rss_n} DONE after {timeout}s")
            if worker.proc.poll() is not None:
                raise RuntimeError(f"worker exited early; log:\n{worker.tail()}")
            value = rss_mb(worker.pid)
            peak = max(peak, value)
            if time.monotonic() - last_poll > 0.5:
                last_poll = time.monotonic()
                done = done_count(conn, names["schema"])
                if "rss_warm_mb" not in out and done >= warm:
                    out["rss_warm_mb"] = value
                step = run.rss_n // 10
                while done >= (len(trajectory) + 1) * step and len(trajectory) < 10:
                    trajectory.append(round(value, 1))
            time.sleep(0.1)
        profile.__exit__(None, None, None)
        time.sleep(1.0)
        out["rss_end_mb"] = rss_mb(worker.pid)
        out["rss_peak_mb"] = max(peak, out["rss_end_mb"])
        producer.wait(60)
        worked = _stop_worker(worker)
    out["growth_mb"] = round(out["rss_end_mb"] - out["rss_warm_mb"], 1)
    out["rss_by_decile_mb"] = trajectory
    out["executions"] = worked["executions"]
    out["handler_result"] = "DONE"
    return out


# --- helpers ----------------------------------------------------------------------------------
def _child(run: Run, procs: list[Child], module: str, name: str, args: dict[str, Any]) -> Child:
    results = run.workdir / f"{name}.json"
    results.unlink(missing_ok=True)
    child = Child(
        module,
        {"cfg": vars(run.cfg), "results": str(results), "concurrency": run.concurrency, **args},
        log=run.workdir / f"{name}.log",
    )
    child.results = results  # type: ignore[attr-defined]
    procs.append(child)
    return child


def _start_worker(
    run: Run, procs: list[Child], mode: str, names: dict[str, str], section: str, **flags: Any
) -> Child:
    worker = _child(run, procs, "worker", f"{section}-{mode}-worker", {"mode": mode, **names,
                                                                       **flags})  # fmt: skip
    worker.wait_line("READY", 60)
    return worker


def _stop_worker(worker: Child) -> dict[str, Any]:
    worker.stop(60)
    path: Path = worker.results  # type: ignore[attr-defined]
    if not path.exists():
        raise RuntimeError(f"worker wrote no results; log:\n{worker.tail()}")
    return read_json(path)


def _wait_done(
    conn: Any, schema: str, n: int, timeout: float, worker: Child, producer: Child | None
) -> float:
    """Poll the database every 20 ms until N bench tasks are DONE; returns that time.time()."""
    deadline = time.monotonic() + timeout
    while True:
        if done_count(conn, schema) >= n:
            return time.time()
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited early ({worker.proc.returncode}):\n{worker.tail()}")
        if producer is not None and producer.proc.poll() not in (None, 0):
            raise RuntimeError(f"producer failed:\n{producer.tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {status_counts(conn, schema)} after {timeout:.0f}s (want {n} DONE)"
            )
        time.sleep(0.02)


def _inproc(run: Run, kind: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    with children() as procs:
        child = _child(run, procs, "inproc", f"{kind}-memory", {"kind": kind, "timeout": timeout,
                                                                **args})  # fmt: skip
        with profiled(run, child.pid, f"{kind}-memory"):
            code = child.wait(timeout + 60)
        if code != 0:
            raise RuntimeError(f"memory {kind} failed ({code}):\n{child.tail()}")
        res = read_json(child.results)  # type: ignore[attr-defined]
    if kind == "e2e":
        seconds = res["t_done"] - res["t_first_add"]
        worked = res["worker"]
        return {
            "per_s": round(args["n"] / seconds),
            "seconds": round(seconds, 3),
            "add_seconds": round(res["t_last_add"] - res["t_first_add"], 3),
            "db": res["db"],
            "worker": worked,
            "cpu_s": {"node": round(res["cpu_s"], 3)},
            "cpu_us_per_task": {"node": cpu.per_task_us(res["cpu_s"], args["n"])},
            "exactly_once": _exactly_once(res["db"], worked, args["n"]),
        }
    return res


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="resilient-task-bench-"))
