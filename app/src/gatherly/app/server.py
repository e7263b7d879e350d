"""Serving with uvicorn so that a stop drops no request and loses no message."""

from __future__ import annotations

import asyncio
from types import FrameType

import structlog
import uvicorn

from gatherly.app.compose import Process
from gatherly.app.request_head import BoundedHeadProtocol
from gatherly.kernel.loop_health import freeze_startup_heap, set_young_collection_threshold, time_gc_pauses

log = structlog.get_logger(__name__)


class GracefulServer(uvicorn.Server):
    """On SIGTERM/SIGINT: readiness goes false at once; after `drain_seconds` (time for a load balancer to
    notice) uvicorn stops accepting, finishes in-flight requests, then the lifespan stops consumers after
    their commit and the relay."""

    def __init__(self, config: uvicorn.Config, process: Process, drain_seconds: float) -> None:
        super().__init__(config)
        self.process = process
        self.drain_seconds = drain_seconds
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        for host in self.process.hosts:
            host.context.readiness.set_draining()
        if self.drain_seconds > 0 and not self._draining:
            self._draining = True
            log.info("draining before shutdown", seconds=self.drain_seconds)
            asyncio.get_running_loop().call_later(self.drain_seconds, super().handle_exit, sig, frame)
            return
        super().handle_exit(sig, frame)


# An idle keep-alive connection is closed by the proxy in front, never first by the server: a proxy that sends a
# request on a connection the server is just closing gets a reset, and does not retry a POST (nginx in the stack keeps
# them KEEP_ALIVE_PROXY_S; ingress-nginx 60 s). uvicorn's default, 5 s, lost requests so in the rollout drill.
KEEP_ALIVE_S = 75
KEEP_ALIVE_PROXY_S = 30


def server_config(process: Process, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        process,
        host=host,
        port=port,
        lifespan="on",
        log_config=None,
        access_log=process.settings.access_log,
        timeout_graceful_shutdown=30,
        timeout_keep_alive=KEEP_ALIVE_S,
        proxy_headers=True,
        http=BoundedHeadProtocol,  # httptools, with the request head bounded before any app sees it
    )


def serve(process: Process, host: str, port: int) -> None:
    time_gc_pauses()
    set_young_collection_threshold(process.settings.gc_young_threshold)
    # Last of the start-up steps (after demo data): what is alive then lives as long as the process.
    process.on_started.append(freeze_startup_heap)
    config = server_config(process, host, port)
    server = GracefulServer(config, process, process.settings.shutdown_drain_seconds)
    server.run()
