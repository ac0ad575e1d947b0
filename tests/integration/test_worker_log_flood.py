"""A worker whose broker is down does not flood its log with aiokafka's reconnect errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import anyio
import pytest

from resilient_task.adapters.postgres import PostgresSettings
from tests.python_child import ROOT, spawn_python

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def start(code: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return spawn_python(code, env)


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
