"""Apache Kafka for development and CI: one KRaft node (broker + controller) from Maven jars.

The jars come from Maven Central through ``services/kafka/pom.xml`` (``python -m
tests.integration.kafka_broker jars``, or :func:`ensure_jars`); nothing is downloaded at run
time beyond that. One implementation serves:

- ``make services-up`` / ``.ci/run``, through the command line below
  (``python -m tests.integration.kafka_broker start --dir .run/kafka --port 9092``);
- the fault tests' private brokers (:class:`ApacheKafka`, on free ports), which kill the broker
  and can wipe its data directory before a restart -- a lost disk: topics, offsets and the
  cluster id are gone, as on a broker replaced with an empty one.

Readiness is a real client call (a metadata request answered), never merely an open port.
Development and CI only: PLAINTEXT listeners on 127.0.0.1, no authentication.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

__all__ = [
    "JARS_DIR",
    "ApacheKafka",
    "broker_problem",
    "ensure_jars",
    "free_port",
    "kill_session",
    "main",
]

ROOT = Path(__file__).resolve().parents[2]
POM = ROOT / "services" / "kafka" / "pom.xml"
JARS_DIR = ROOT / "services" / "kafka" / "lib"
_HEAP = "-Xmx768m"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_jars() -> Path:
    """Resolve the broker's jars from Maven Central into ``services/kafka/lib`` if absent."""
    if not any(JARS_DIR.glob("kafka_2.13-*.jar")):
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError(f"no Apache Kafka jars in {JARS_DIR} and no mvn to resolve them")
        subprocess.run(
            [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies"],
            check=True,
            timeout=600,
        )
    return JARS_DIR


async def _list_topics(bootstrap: str, within: float) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(within * 1000))
    try:
        async with asyncio.timeout(within):
            await admin.start()
            await admin.list_topics()
    finally:
        await admin.close()


def broker_problem(bootstrap: str, timeout: float = 5.0) -> str | None:
    """Why the broker at ``bootstrap`` does not answer a metadata request, or None.

    Runs its own event loop in a thread of its own, so it may be called from inside a running
    loop (a test) as well as from plain code.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        try:
            pool.submit(asyncio.run, _list_topics(bootstrap, timeout)).result()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}".strip()
    return None


class ApacheKafka:
    """One Apache Kafka KRaft node in ``workdir``: config, data and log files live there."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        self.controller_port = free_port()
        self.data_dir = workdir / "data"
        self.config = workdir / "server.properties"
        self.log = workdir / "kafka.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def _write_config(self) -> None:
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            # One node: every internal topic has one replica; fewer offset partitions make
            # the first consumer group's coordinator ready sooner.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # The tests run consumer groups with 1 s sessions so a dead member is noticed
            # quickly; Kafka refuses sessions below 6 s by default.
            "group.min.session.timeout.ms": "500",
        }
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))

    def _java(self, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("no java on PATH: Apache Kafka needs Java 17 or later")
        classpath = str(ensure_jars() / "*")
        return [java, _HEAP, "-cp", classpath, *args]

    def _format(self) -> None:
        """Format the data directory (a new cluster id) unless it already holds a node."""
        if (self.data_dir / "meta.properties").exists():
            return
        command = self._java(
            "kafka.tools.StorageTool", "format", "--standalone",
            "--cluster-id", _cluster_id(), "--config", str(self.config),
        )  # fmt: skip
        with self.log.open("ab") as log_file:
            subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                check=True, timeout=120,
            )  # fmt: skip

    def spawn(self) -> None:
        """Write the config, format a new data directory and start the broker process."""
        self._write_config()
        self._format()
        command = self._java("kafka.Kafka", str(self.config))
        with self.log.open("ab") as log_file:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def exited(self) -> int | None:
        """The exit code if the broker process has ended, else None."""
        process = self._process
        return None if process is None else process.poll()

    def wait_ready(self, within: float = 90.0) -> None:
        """Block until a metadata request succeeds; raise if the process dies or time runs out."""
        deadline = time.monotonic() + within
        problem = "not started"
        while time.monotonic() < deadline:
            code = self.exited()
            if code is not None:
                raise RuntimeError(f"Apache Kafka exited with {code}; see {self.log}")
            problem = broker_problem(self.bootstrap, timeout=2.0) or ""
            if not problem:
                return
            time.sleep(0.5)
        raise RuntimeError(
            f"Apache Kafka at {self.bootstrap} not ready in {within:.0f} s: {problem}"
        )

    def kill(self) -> None:
        """SIGKILL the broker (an abrupt outage) and wait until it has exited."""
        process, self._process = self._process, None
        kill_session(process, within=20)

    def wipe(self) -> None:
        """Delete the data directory: the next start is a broker that lost its disk."""
        shutil.rmtree(self.data_dir, ignore_errors=True)


def kill_session(process: subprocess.Popen[bytes] | None, within: float) -> None:
    """SIGKILL ``process`` and its session (``start_new_session=True``); wait ``within`` s."""
    if process is None:
        return
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=within)


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    import base64

    # Kafka's own Uuid.randomUuid() draws again when the text starts with "-": the storage
    # tool's argument parser would read such an id as an option (1 format in 64 failed).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _stop_pid(pid_file: Path, within: float = 30.0) -> str:
    if not pid_file.exists():
        return "no Apache Kafka started by services-up; nothing to stop"
    pid = int(pid_file.read_text().strip() or 0)
    try:
        os.killpg(pid, signal.SIGTERM)  # a clean shutdown; the session leader is the JVM
    except ProcessLookupError:
        pid_file.unlink()
        return f"Apache Kafka (pid {pid}) had already exited"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    pid_file.unlink()
    return f"stopped Apache Kafka (pid {pid})"


def main(argv: list[str] | None = None) -> int:
    """``start``/``stop`` a long-lived broker for ``make services-up`` and ``.ci/run``."""
    parser = argparse.ArgumentParser(prog="python -m tests.integration.kafka_broker")
    parser.add_argument("action", choices=["jars", "start", "stop"])
    parser.add_argument("--dir", type=Path, default=ROOT / ".run" / "kafka")
    parser.add_argument("--port", type=int, default=9092)
    args = parser.parse_args(argv)
    # The readiness probe retries while the broker starts: aiokafka's connection errors are
    # expected then, not news.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    pid_file = args.dir / "kafka.pid"
    if args.action == "jars":
        ensure_jars()
        return 0
    if args.action == "stop":
        print(_stop_pid(pid_file))
        return 0
    bootstrap = f"127.0.0.1:{args.port}"
    if broker_problem(bootstrap, timeout=2.0) is None:
        print(f"a Kafka broker already answers on {bootstrap}; reusing it")
        return 0
    started = time.monotonic()
    broker = ApacheKafka(args.dir, port=args.port)
    try:
        broker.spawn()
        pid_file.write_text(f"{broker.pid}\n")
        broker.wait_ready()
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        with contextlib.suppress(OSError):
            print("".join(broker.log.read_text().splitlines(True)[-20:]), file=sys.stderr)
        broker.kill()
        pid_file.unlink(missing_ok=True)
        return 1
    print(
        f"Apache Kafka ready on {bootstrap} in {time.monotonic() - started:.1f} s "
        f"(pid {broker.pid}, log {broker.log})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
