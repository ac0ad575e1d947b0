"""A worker whose broker is down does not flood its log with aiokafka's reconnect errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from resilient_task.adapters.postgres import PostgresSettings

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ROOT = Path(__file__).resolve().parents[2]


def start(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_aiokafka_reconnect_errors_are_held_back_while_the_broker_is_down(
    database_url: str, settings: PostgresSettings
) -> None:
    with socket.socket() as s:  # a port nobody listens on: the broker is down
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "RESILIENT_TASK_DATABASE_URL": database_url,
        "RESILIENT_TASK_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{dead}",
        "RT_METRICS_SCHEMA": settings.schema,
    }
    code = (
        "import sys; from resilient_task.cli import main; "
        "sys.exit(main(['worker', '--app', 'tests.integration.metrics_app:app']))"
    )
    worker = start(code, env)
    try:
        await anyio.sleep(15)  # aiokafka retries every few hundred ms meanwhile
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    lines = output.splitlines()
    reconnects = [line for line in lines if "aiokafka" in line and "Unable connect" in line]
    assert len(reconnects) == 1, output  # the first one, then held back (one a minute)
    assert "running; SIGTERM or SIGINT stops it gracefully" in output
    assert worker.returncode == 0, output
