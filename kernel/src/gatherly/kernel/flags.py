"""Feature flags through OpenFeature with flagd's provider: by default a JSON file in flagd's flag-definition format
evaluated in-process and reloaded when it changes, or a flagd server; another OpenFeature provider (LaunchDarkly,
...) can be registered instead without touching callers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import structlog
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.provider import FeatureProvider

log = structlog.get_logger(__name__)

# Flags every service knows, written to a new flags file so operators see what they can switch.
DEFAULT_FLAGS: dict[str, dict[str, Any]] = {
    "flags": {
        "demo-data": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
        "weekly-digest": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
    }
}


def flag_provider(kind: str, path: Path, *, check_seconds: float = 1.0) -> FeatureProvider:
    """flagd's own provider in both modes, so flag files get flagd's whole format (targeting rules, fractional
    rollouts) and moving to a flagd server is a setting:
    - "file": flagd's evaluation engine in this process on `path` (created with the defaults when missing),
      re-read every `check_seconds` when its modification time changed; a half-written file keeps the last good
      flags (the provider reports an error and logs it until the file parses again);
    - "flagd": a flagd server, configured by the provider's own FLAGD_* environment variables (FLAGD_RESOLVER=rpc
      or in-process, FLAGD_HOST, FLAGD_PORT, FLAGD_TLS, ...), as flagd's documentation describes them."""
    if kind == "flagd":
        return FlagdProvider()
    ensure_flags_file(path)
    return FlagdProvider(
        resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=int(check_seconds * 1000)
    )


def ensure_flags_file(path: Path) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(DEFAULT_FLAGS, indent=2) + "\n")


class Flags:
    """What services hold: `await flags.enabled("new-search", user_id=...)`. A flag read before the provider has
    its flags gives the caller's default; `start` waits for them."""

    def __init__(self, provider: FeatureProvider, domain: str = "gatherly") -> None:
        self.provider = provider
        self.domain = domain
        self.client: OpenFeatureClient = api.get_client(domain)

    async def start(self, timeout: float = 10.0) -> None:
        """Register the provider (its file watcher or flagd connection starts here, not when the process object is
        made) and wait until it has read its flags; after `timeout` go on with callers' defaults and log why,
        rather than keep a service from starting."""
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        api.set_provider(self.provider, domain=self.domain)

        def on_ready(_: object) -> None:  # called on the provider's thread
            loop.call_soon_threadsafe(ready.set)

        self.client.add_handler(ProviderEvent.PROVIDER_READY, on_ready)
        try:
            await asyncio.wait_for(ready.wait(), timeout)
        except TimeoutError:
            log.error("feature flags not available yet: callers get their defaults", provider=type(self.provider))
        finally:
            self.client.remove_handler(ProviderEvent.PROVIDER_READY, on_ready)

    def close(self) -> None:
        self.provider.shutdown()  # stops the file watcher's thread or the flagd connection

    async def enabled(self, key: str, default: bool = False, **context: str) -> bool:
        evaluation = EvaluationContext(targeting_key=context.pop("user_id", None), attributes=dict(context))
        return await self.client.get_boolean_value_async(key, default, evaluation)

    async def value(self, key: str, default: Any) -> Any:
        return await self.client.get_object_value_async(key, default)
