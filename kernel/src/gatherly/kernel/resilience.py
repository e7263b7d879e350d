"""Retry with backoff (stamina) inside a circuit breaker (purgatory): how every remote call is made."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import stamina
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

T = TypeVar("T")


class CircuitOpen(Exception):
    """The remote side failed too often lately; calls fail fast until the breaker's ttl has passed."""

    def __init__(self, circuit: str) -> None:
        super().__init__(f"circuit {circuit!r} is open")
        self.circuit = circuit


class Resilience:
    """One per process: breakers are named per remote dependency (e.g. "smtp", "jwks", "s3")."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        open_seconds: float = 30.0,
        attempts: int = 3,
        wait_initial: float = 0.1,
        wait_max: float = 2.0,
    ) -> None:
        self.breakers = AsyncCircuitBreakerFactory(default_threshold=failure_threshold, default_ttl=open_seconds)
        self.attempts = attempts
        self.wait_initial = wait_initial
        self.wait_max = wait_max

    async def call(
        self,
        circuit: str,
        operation: Callable[[], Awaitable[T]],
        *,
        retry_on: type[Exception] | tuple[type[Exception], ...] = Exception,
        attempts: int | None = None,
    ) -> T:
        """Run `operation`, retrying failures of type `retry_on` with exponential backoff and jitter.
        Every failure counts against the circuit; once it is open, raises CircuitOpen without calling."""

        def worth_retrying(error: Exception) -> bool:
            return isinstance(error, retry_on) and not isinstance(error, CircuitOpen)

        async for attempt in stamina.retry_context(
            on=worth_retrying,
            attempts=attempts or self.attempts,
            wait_initial=self.wait_initial,
            wait_max=self.wait_max,
            timeout=None,
        ):
            with attempt:
                breaker = await self.breakers.get_breaker(circuit)
                try:
                    async with breaker:
                        return await operation()
                except OpenedState as opened:
                    raise CircuitOpen(circuit) from opened
        raise AssertionError("unreachable: stamina re-raises the last error")
