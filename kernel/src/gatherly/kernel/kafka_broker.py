"""A single-node Kafka (KRaft: broker and controller in one JVM) run from the jars `scripts/kafka.sh` fetches.

Used by the tests (one broker per pytest session) and by anyone trying the Kafka backend on one machine."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from gatherly.kernel.testing import free_port, stop_process

STARTUP_S = 180.0  # a cold JVM on a busy two-core machine took 40 s to open its port
STOP_S = 30.0


class KafkaMissing(RuntimeError):
    """The Kafka jars are not installed: run `bash scripts/kafka.sh`."""


class KafkaPortTaken(RuntimeError):
    """The broker exited at start because one of its ports was taken meanwhile."""


def kafka_libs() -> Path:
    """The directory of Kafka's jars: GATHERLY_KAFKA_LIBS, else the newest complete copy scripts/kafka.sh made."""
    if configured := os.environ.get("GATHERLY_KAFKA_LIBS"):
        libs = Path(configured)
    else:
        copies = sorted((Path.home() / ".cache" / "gatherly").glob("kafka-*/complete"))
        libs = (
            copies[-1].parent / "libs" if copies else Path.home() / ".cache" / "gatherly" / "kafka-<version>" / "libs"
        )
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise KafkaMissing(
            f"no Kafka jars in {libs}: run `bash scripts/kafka.sh` (CI does), or set GATHERLY_KAFKA_LIBS"
        )
    return libs


def broker_properties(data_dir: Path, port: int, controller_port: int, initial_rebalance_delay_ms: int = 0) -> str:
    """A one-node cluster's server.properties. Topics are never auto-created (the log creates them explicitly,
    with their partitions and retention); group settings are shortened so tests rebalance in seconds. A new group's
    first assignment waits `initial_rebalance_delay_ms` for more members (Kafka's default is 3,000): none for the
    tests, which start one member at a time; a bench starting several members at once waits so that they share the
    partitions from the start instead of rebalancing mid-run."""
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data_dir}",
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            f"group.initial.rebalance.delay.ms={initial_rebalance_delay_ms}",
            "group.min.session.timeout.ms=1000",
            "",
        ]
    )


def _java(libs: Path, *args: str) -> list[str]:
    # A small heap and the client compiler only: the tests' load is light, and the two-core machine is shared.
    return ["java", "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", f"{libs}/*", *args]


def format_storage(libs: Path, config: Path, cluster_id: str) -> None:
    """Format the broker's log directory for a new cluster. The id is passed as `--cluster-id=...`: one in 64
    random ids starts with `-`, which after a separate `-t` was read as an unknown option (the start failed)."""
    subprocess.run(
        _java(libs, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config)),
        check=True,
        capture_output=True,
        timeout=STARTUP_S,
    )


def _start(folder: Path, libs: Path, initial_rebalance_delay_ms: int) -> tuple[subprocess.Popen[bytes], str]:
    port, controller_port = free_port(), free_port()
    data = folder / "data"
    config = folder / "server.properties"
    config.write_text(broker_properties(data, port, controller_port, initial_rebalance_delay_ms))
    if not data.exists():
        # Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding.
        format_storage(libs, config, base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
    with (folder / "broker.log").open("ab") as log:
        process = subprocess.Popen(_java(libs, "kafka.Kafka", str(config)), stdout=log, stderr=subprocess.STDOUT)
    (folder / "broker.pid").write_text(f"{process.pid}\n")  # for whoever reports what runs (gatherly stack status)
    return process, f"127.0.0.1:{port}"


def _wait_until_listening(process: subprocess.Popen[bytes], bootstrap: str, log: Path) -> None:
    host, port = bootstrap.rsplit(":", 1)
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text(errors="replace")
            failure = KafkaPortTaken if "Address already in use" in output else RuntimeError
            raise failure(f"Kafka exited at start ({process.returncode}): {output[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1.0):
            return
        time.sleep(0.2)
    raise RuntimeError(f"Kafka did not listen on {bootstrap} within {STARTUP_S:g}s: {log.read_text()[-3000:]}")


@contextlib.contextmanager
def running_kafka(folder: Path, *, initial_rebalance_delay_ms: int = 0) -> Iterator[str]:
    """Start a one-node Kafka with its data in `folder` on free loopback ports; yield its bootstrap address
    (host:port); stop it at the end. Raises `KafkaMissing` without the jars, never starts half a cluster."""
    libs = kafka_libs()
    folder.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        process, bootstrap = _start(folder, libs, initial_rebalance_delay_ms)
        try:
            _wait_until_listening(process, bootstrap, folder / "broker.log")
        except KafkaPortTaken:
            stop_process(process, STOP_S)
            if attempt == 2:
                raise
            continue
        except BaseException:
            stop_process(process, STOP_S)
            raise
        try:
            yield bootstrap
        finally:
            stop_process(process, STOP_S)
        return


def main() -> None:
    """`python -m gatherly.kernel.kafka_broker <data-dir>`: run a one-node Kafka until interrupted."""
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "./var/kafka").resolve()
    with running_kafka(folder) as bootstrap:
        sys.stdout.write(
            f"Kafka is listening: GATHERLY_KAFKA_BOOTSTRAP_SERVERS={bootstrap} (log: {folder / 'broker.log'})\n"
        )
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()
