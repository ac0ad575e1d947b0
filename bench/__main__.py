"""``python -m bench --json out.json``: run the benchmark, print a table, write JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import commit_ceiling, kafka_floor, machine, report, sections
from bench.common import Config, backend_options, stale_schemas

SECTIONS = ("add", "drain", "e2e", "metrics", "latency", "scheduled", "memory", "ceiling")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--database-url", default=Config.database_url)
    p.add_argument("--kafka-bootstrap", default=Config.kafka_bootstrap)
    p.add_argument("--n", type=int, default=20_000, help="tasks for add and end-to-end")
    p.add_argument("--batch", type=int, default=1000, help="add_tasks batch size")
    p.add_argument("--quick", action="store_true", help="small N: a smoke run")
    p.add_argument(
        "--only", action="append", default=[], metavar="SECTION",
        help=f"run only these sections (repeat or comma-separate): {', '.join(SECTIONS)}; "
        "metrics (e2e with metrics off and on, alternated) runs only when named",
    )  # fmt: skip
    p.add_argument(
        "--modes", default=",".join(sections.MODES),
        help="modes for e2e and latency (comma-separated)",
    )  # fmt: skip
    p.add_argument(
        "--repeat", type=int, default=1, metavar="K",
        help="run add and end-to-end K times and report the median run (noisy machines)",
    )  # fmt: skip
    p.add_argument(
        "--drain-modes", default=",".join(sections.DRAIN_MODES),
        help="worker modes for the drain section (comma-separated)",
    )  # fmt: skip
    p.add_argument(
        "--ceiling-seconds", type=int, metavar="S",
        help="seconds per pgbench run of the ceiling section (default 10; 3 with --quick)",
    )  # fmt: skip
    p.add_argument(
        "--uvloop", action="store_true",
        help="run every event loop of the bench (workers, producers, adds) on uvloop",
    )  # fmt: skip
    p.add_argument("--rss-n", type=int, default=100_000, help="tasks for the memory section")
    p.add_argument(
        "--rss-modes", default="memory,postgres_kafka",
        help="modes for the memory section (postgres-only is slow by default: see docs)",
    )  # fmt: skip
    p.add_argument("--profile", type=Path, help="py-spy the worker into this directory")
    p.add_argument(
        "--handler-concurrency", type=int, metavar="N",
        help="what-if: SimpleConcurrencyPolicy(N) for the bench handler (default: the "
        "library's default policy); the headline numbers use the default",
    )  # fmt: skip
    p.add_argument(
        "--breakdown", action="store_true",
        help="diagnosis: instrument the latency workers to split add->start into legs",
    )  # fmt: skip
    p.add_argument(
        "--drop-stale", action="store_true",
        help="drop bench_* schemas left by interrupted runs (not while another bench runs!)",
    )  # fmt: skip
    args = p.parse_args(argv)
    only = {s for item in args.only for s in item.split(",") if s}
    unknown = only - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    args.only = only or set(SECTIONS) - {"metrics"}  # metrics: on request (--only metrics)
    if args.quick:
        args.n = min(args.n, 2000)
        args.rss_n = min(args.rss_n, 10_000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    cfg = Config(database_url=args.database_url, kafka_bootstrap=args.kafka_bootstrap)
    if args.uvloop:
        os.environ["BENCH_UVLOOP"] = "1"  # the children inherit it (bench.common)
    modes = tuple(m for m in args.modes.split(",") if m)
    run = sections.Run(
        cfg=cfg,
        n=args.n,
        batch=args.batch,
        latency_n=50 if args.quick else 200,
        scheduled_n=200 if args.quick else 1000,
        rss_n=args.rss_n,
        rss_modes=tuple(m for m in args.rss_modes.split(",") if m),
        workdir=sections.workdir(),
        profile_dir=args.profile,
        concurrency=args.handler_concurrency,
        breakdown=args.breakdown,
        log=lambda *a: print(*a, file=sys.stderr, flush=True),
        backend_options=backend_options(),
    )
    log = run.log
    stale = stale_schemas(cfg, drop=args.drop_stale)
    if stale:
        verb = "dropped" if args.drop_stale else "found (--drop-stale drops them)"
        log(f"{verb} {len(stale)} bench schema(s) left by interrupted runs: {', '.join(stale)}")
    r: dict[str, Any] = {
        "machine": machine.collect(cfg),
        "settings": {
            "n": run.n, "batch": run.batch, "latency_n": run.latency_n,
            "latency_interval_ms": 20, "scheduled_n": run.scheduled_n, "rss_n": run.rss_n,
            "quick": args.quick, "run_id": cfg.run_id, "logs": str(run.workdir),
            "handler_concurrency": args.handler_concurrency or "default",
            "repeat": args.repeat,
            "uvloop": args.uvloop,
        },
        "errors": {},
        "load": {},
    }  # fmt: skip
    log(f"run {cfg.run_id}: child logs in {run.workdir}")

    def save() -> None:
        r["targets"] = report.targets(r)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(r, indent=2, sort_keys=False) + "\n")

    def section(name: str, fn: Any, *a: Any) -> Any:
        log(f"[{time.strftime('%H:%M:%S')}] {name} ... (load average {os.getloadavg()[0]:.2f})")
        started = time.monotonic()
        r["load"][name] = {"before": round(os.getloadavg()[0], 2)}
        try:
            try:
                value = fn(*a)
            except Exception as exc:
                if not _unavailable(exc):
                    raise
                # The server went away (others' fault tests restart it on shared machines):
                # retry the section once, in fresh schemas, and say so.
                log(f"  {name}: database or broker unavailable ({exc!r:.200}); retrying in 15 s")
                r.setdefault("retried", []).append(name)
                time.sleep(15)
                value = fn(*a)
        except Exception as exc:  # one failed section must not lose the others
            r["errors"][name] = f"{type(exc).__name__}: {exc}"
            log(traceback.format_exc())
            return None
        finally:
            r["load"][name]["after"] = round(os.getloadavg()[0], 2)
            r["load"][name]["seconds"] = round(time.monotonic() - started, 1)
            log(f"[{time.strftime('%H:%M:%S')}] {name} took {time.monotonic() - started:.1f}s")
        log(f"  {name}: {_short(value)}")
        return value

    checks: list[bool] = []
    if "add" in args.only:
        runs = [section("add", sections.add_throughput, run) for _ in range(args.repeat)]
        runs = [v for v in runs if v]
        if runs:
            kinds = ("single", "bulk")
            value = {
                mode: {
                    "batch": run.batch,
                    **{k: _median([v[mode][k] for v in runs]) for k in kinds},
                    **{f"{k}_cpu_us": _median_run(runs, mode, k) for k in kinds},
                    **({"runs": [{k: v[mode][k] for k in kinds} for v in runs]}
                       if len(runs) > 1 else {}),
                }
                for mode in runs[0]
            }  # fmt: skip
            r["add_per_s_by_mode"] = value
            pg = value["postgres"]
            r["add_per_s"] = {"single": pg["single"], "bulk": pg["bulk"]}
        save()
    if "drain" in args.only:
        r["drain"], r["drain_per_s"] = {}, {}
        for mode in (m for m in args.drain_modes.split(",") if m):
            runs = [section(f"drain {mode}", sections.drain, run, mode)
                    for _ in range(args.repeat)]  # fmt: skip
            checks.extend(bool(v and v["exactly_once"]) for v in runs)
            runs = [v for v in runs if v]
            if runs:
                value = sorted(runs, key=lambda v: v["per_s"])[(len(runs) - 1) // 2]
                if len(runs) > 1:
                    value["runs_per_s"] = [v["per_s"] for v in runs]
                    value["runs_cpu_us"] = [v["cpu_us_per_task"]["worker"] for v in runs]
                r["drain"][mode] = value
                r["drain_per_s"][mode] = value["per_s"]
            save()
    if "e2e" in args.only:
        r["e2e"], r["e2e_per_s"] = {}, {}
        for mode in modes:
            runs = [section(f"e2e {mode}", sections.end_to_end, run, mode)
                    for _ in range(args.repeat)]  # fmt: skip
            checks.extend(bool(v and v["exactly_once"]) for v in runs)
            runs = [v for v in runs if v]
            if runs:  # the median run by tasks/s; every run's rate is kept
                value = sorted(runs, key=lambda v: v["per_s"])[(len(runs) - 1) // 2]
                if len(runs) > 1:
                    value["runs_per_s"] = [v["per_s"] for v in runs]
                    value["runs_cpu_us"] = [v["cpu_us_per_task"] for v in runs]
                r["e2e"][mode] = value
                r["e2e_per_s"][mode] = value["per_s"]
            save()
    if "metrics" in args.only:
        # The cost of metrics: e2e with the Prometheus observer and endpoints off and on,
        # alternated in the same run (off, on, off, on...) so that load drifts hit both alike.
        r["metrics_cost"] = {}
        for mode in modes:
            rates: dict[str, list[int]] = {"off": [], "on": []}
            for _ in range(max(args.repeat, 1)):
                for state in ("off", "on"):
                    v = section(f"e2e {mode} metrics {state}", sections.end_to_end, run, mode,
                                state == "on")  # fmt: skip
                    if v:
                        checks.append(bool(v["exactly_once"]))
                        rates[state].append(v["per_s"])
            if rates["off"] and rates["on"]:
                off, on = _median(rates["off"]), _median(rates["on"])
                r["metrics_cost"][mode] = {
                    "off_per_s": off,
                    "on_per_s": on,
                    "cost_percent": round(100 * (off - on) / off, 1),
                    "runs": rates,
                }
            save()
    if "latency" in args.only:
        r["latency"], r["latency_ms"] = {}, {}
        for mode in modes:
            value = section(f"latency {mode}", sections.latency, run, mode)
            if value:
                r["latency"][mode] = value
                r["latency_ms"][mode] = {k: value[k] for k in ("p50", "p99", "max")}
                r["latency_ms"][mode]["add_call_p50"] = value["add_task_call_ms"]["p50"]
                checks.append(value["exactly_once"])
            save()
        if "postgres_kafka" in modes:
            value = section("kafka floor", kafka_floor.run, cfg)
            if value:
                r["kafka_floor_ms"] = value
            save()
    if "scheduled" in args.only:
        value = section("scheduled", sections.scheduled, run)
        if value:
            r["scheduled_lateness_ms"] = value
            checks.append(value["exactly_once"])
        save()
    if "memory" in args.only:
        r["rss"] = {}
        for mode in run.rss_modes:
            value = section(f"memory {mode}", sections.memory, run, mode)
            if value:
                value["n"] = run.rss_n
                r["rss"][mode] = value
            save()
        if r["rss"]:
            r["rss_growth_mb"] = max(v["growth_mb"] for v in r["rss"].values())
    if "ceiling" in args.only:
        seconds = args.ceiling_seconds or (3 if args.quick else 10)
        value = section("commit ceiling", lambda: commit_ceiling.run(cfg, seconds=seconds))
        if value:
            r["commit_ceiling_per_s"] = value
        save()
    if checks:
        r["exactly_once"] = all(checks)
    removed = kafka_floor.delete_run_topics(cfg)
    if removed:
        log(f"deleted {len(removed)} topic(s) of this run from the broker")
    save()
    print(report.table(r))
    print()
    print(report.machine_lines(r["machine"]))
    return 1 if r["errors"] else 0


def _median(values: list[int]) -> int:
    """The median (the lower middle one for an even count): a value that was measured."""
    return sorted(values)[(len(values) - 1) // 2]


def _median_run(runs: list[dict[str, Any]], mode: str, kind: str) -> Any:
    """The CPU costs of the run whose rate is the median one."""
    ordered = sorted(runs, key=lambda v: v[mode][kind])
    return ordered[(len(ordered) - 1) // 2][mode][f"{kind}_cpu_us"]


def _unavailable(exc: BaseException) -> bool:
    """A connection-level failure (server restarted or unreachable), not a bench or code bug."""
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__
        if name in ("OperationalError", "BackendUnavailableError", "KafkaConnectionError"):
            return True
        if "connection" in str(seen).lower() and "failed" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) < 400 else text[:400] + " ..."


if __name__ == "__main__":
    sys.exit(main())
