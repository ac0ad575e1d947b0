"""A worker process: ``python -m bench.worker '<json args>'``.

One default node (``ResilientTask(database_url=..., triggers=...)``) with the no-op handler, logging
at WARNING. Prints READY once the node runs; on SIGTERM writes its results file and stops.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import anyio

from bench import breakdown
from bench.common import Config, child_main, monitored, node, write_json
from bench.recorder import Recorder, node_stats
from resilient_task.environment import gc_threshold_from_env
from resilient_task.gc_tuning import tune_gc


async def serve(args: dict[str, Any]) -> None:
    cfg = Config(**args["cfg"])
    recorder = Recorder(
        track_ids=args.get("track_ids", True),
        delete=args.get("delete", False),
        concurrency=args.get("concurrency"),
    )
    app = node(
        cfg,
        args["mode"],
        schema=args["schema"],
        namespace=args["namespace"],
        group=args["group"],
        handlers=[recorder.handler()],
        run_workers=True,
    )
    if args.get("breakdown"):
        breakdown.install_executor_hook()
    monitoring = monitored(app, args.get("metrics", False))  # before start: sets the observer
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with app, monitoring:
            if args.get("breakdown"):
                breakdown.install_dao_hook(app)
            tune_gc(gc_threshold_from_env(os.environ))  # as ``resilient-task worker`` does
            print("READY", flush=True)
            async for _ in signals:
                break
            # Results first: a slow shutdown must not lose them.
            result = recorder.summary(with_starts=args.get("with_starts", False))
            result["stats"] = node_stats(app)
            if args.get("breakdown"):
                result["marks"] = breakdown.marks
            write_json(args["results"], result)


def main() -> None:
    child_main(serve)


if __name__ == "__main__":
    main()
