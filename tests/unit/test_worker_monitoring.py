"""``resilient-task worker --metrics-port --log-format json``: a real worker process."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from resilient_task.cli import main
from tests.python_child import ROOT, spawn_python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(*flags: str) -> subprocess.Popen[str]:
    argv = ["worker", "--app", "tests.unit.cli_apps:memory_node", "--in-memory", *flags]
    code = f"import sys; from resilient_task.cli import main; sys.exit(main({argv!r}))"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("RESILIENT_TASK_LOG_LEVEL", None)
    return spawn_python(code, env)


def lines_until(worker: subprocess.Popen[str], marker: str, within: float = 60) -> list[str]:
    """The worker's output lines up to the one holding ``marker`` (bounded: never hangs).

    Reads the pipe's descriptor directly: a buffered ``readline`` after ``select`` would leave
    lines read ahead in Python's buffer, where ``select`` cannot see them.
    """
    assert worker.stdout is not None
    fd = worker.stdout.fileno()
    data = b""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        lines = data.decode(errors="replace").splitlines(keepends=True)
        for index, line in enumerate(lines):
            if marker in line:
                return lines[: index + 1]
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk:
            break
        data += chunk
    raise AssertionError(f"no {marker!r} in {data!r}")


def stop(worker: subprocess.Popen[str]) -> str:
    worker.send_signal(signal.SIGTERM)
    try:
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    return output


def get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read().decode()


def test_a_worker_serves_metrics_and_health_on_loopback_and_logs_json_lines() -> None:
    port = free_port()
    worker = start("--metrics-port", str(port), "--log-format", "json", "--log-level", "info")
    try:
        seen = lines_until(worker, "SIGTERM or SIGINT stops it gracefully")
        assert get(port, "/healthz") == (200, "ok\n")
        assert get(port, "/readyz") == (200, "ready\n")
        status, body = get(port, "/metrics")
        assert status == 200
        assert "resilient_task_ready 1.0" in body
        assert "resilient_task_dependency_up" in body
        with socket.socket() as s:  # bound to loopback only
            s.settimeout(2)
            outside = [
                a for a in socket.gethostbyname_ex(socket.gethostname())[2] if a[:4] != "127."
            ]
            if outside:
                assert s.connect_ex((outside[0], port)) != 0
    finally:
        output = stop(worker)
    assert worker.returncode == 0, output
    for line in [*seen, *output.splitlines(keepends=True)]:
        if line.strip():
            body = json.loads(line)
            assert {"time", "level", "logger", "message"} <= set(body)


@pytest.mark.parametrize(
    "flags",
    [
        ["--metrics-port", "70000"],
        ["--metrics-port", "nine"],
        ["--log-level", "chatty"],
        ["--log-format", "xml"],
    ],
)
def test_bad_worker_flags_are_one_line_usage_errors(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["worker", "--app", "tests.unit.cli_apps:memory_node", "--in-memory", *flags]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage error
        code = int(exc.code or 0)
    assert code == 2
    assert "Traceback" not in capsys.readouterr().err
