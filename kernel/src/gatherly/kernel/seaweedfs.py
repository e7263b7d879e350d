"""SeaweedFS in one process (master, volume, filer and S3 gateway) on free loopback ports: the S3 server of the
images service's storage tests and of `gatherly stack up`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from gatherly.kernel.testing import free_port, stop_process

STARTUP_S = 60.0
STOP_S = 20.0
START_ATTEMPTS = 3


class SeaweedMissing(RuntimeError):
    """The `weed` binary is not installed: run `bash scripts/seaweedfs.sh`."""


class SeaweedPortTaken(RuntimeError):
    """SeaweedFS exited at start because one of its ports was taken meanwhile."""


@dataclass(frozen=True)
class SeaweedServer:
    endpoint: str  # the S3 API, http://127.0.0.1:<port>
    pid: int


def weed_binary() -> str:
    """GATHERLY_TEST_WEED, else `weed` on the PATH, else where scripts/seaweedfs.sh puts it."""
    found = os.environ.get("GATHERLY_TEST_WEED") or shutil.which("weed") or str(Path.home() / ".local/bin/weed")
    if not Path(found).is_file():
        raise SeaweedMissing(
            f"the SeaweedFS binary is missing ({found}): run `bash scripts/seaweedfs.sh` (CI does), "
            "or set GATHERLY_TEST_WEED"
        )
    return found


def _start(folder: Path, config: Path) -> tuple[subprocess.Popen[bytes], str]:
    # Every port chosen here (gRPC ports default to the HTTP port + 10000, which may not exist or be taken), and the
    # side servers not needed (Iceberg, Lance) turned off, so parallel servers never collide.
    names = ("master", "volume", "filer", "s3", "master.grpc", "volume.grpc", "filer.grpc", "s3.grpc", "debug")
    ports = {name: free_port() for name in names}
    command = [
        weed_binary(),
        "server",
        f"-dir={folder}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.config={config}",
        f"-master.port.grpc={ports['master.grpc']}",
        f"-volume.port.grpc={ports['volume.grpc']}",
        f"-filer.port.grpc={ports['filer.grpc']}",
        f"-s3.port.grpc={ports['s3.grpc']}",
        f"-debug.port={ports['debug']}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # Small volumes and many of them: each bucket is a collection with volumes of its own, and the 30 GB default
        # would leave no free volume for the next bucket.
        "-master.volumeSizeLimitMB=32",
        "-volume.max=500",
    ]
    with (folder / "weed.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    return process, f"http://127.0.0.1:{ports['s3']}"


def _wait_for_s3(endpoint: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log.read_text(errors="replace")
            failure = SeaweedPortTaken if "address already in use" in output else RuntimeError
            raise failure(f"SeaweedFS exited at start ({process.returncode}): {output[-2000:]}")
        with contextlib.suppress(httpx.TransportError):
            # Anonymous requests are refused once the S3 gateway (and its identities) are up.
            if httpx.get(endpoint, timeout=1).status_code in (200, 403):
                return
        time.sleep(0.2)
    raise RuntimeError(f"SeaweedFS did not answer within {STARTUP_S:g}s: {log.read_text(errors='replace')[-2000:]}")


@contextlib.contextmanager
def running_seaweedfs(folder: Path, access_key: str, secret_key: str) -> Iterator[SeaweedServer]:
    """Start SeaweedFS with its data in `folder` and one identity (so signatures and presigned-POST policies are
    really checked); yield its S3 endpoint; stop it at the end."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "s3.json"
    identity = {"name": "gatherly", "credentials": [{"accessKey": access_key, "secretKey": secret_key}]}
    config.write_text(json.dumps({"identities": [{**identity, "actions": ["Admin", "Read", "Write", "List"]}]}))
    # A port chosen free can still be taken before SeaweedFS binds it (another server, a client socket): then it
    # exits at start saying so, and is started again on other ports. Any other failure fails at once.
    for attempt in range(1, START_ATTEMPTS + 1):
        process, endpoint = _start(folder, config)
        try:
            _wait_for_s3(endpoint, process, folder / "weed.log")
            break
        except SeaweedPortTaken:
            stop_process(process, STOP_S)
            if attempt == START_ATTEMPTS:
                raise
        except BaseException:
            stop_process(process, STOP_S)
            raise
    try:
        yield SeaweedServer(endpoint, process.pid)
    finally:
        stop_process(process, STOP_S)
