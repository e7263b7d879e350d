"""Feature flags through OpenFeature. By default a JSON file in flagd's flag-definition format, reloaded when
it changes; a flagd or LaunchDarkly provider can be registered instead without touching callers."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider import FeatureProvider, Metadata
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

# Flags every service knows, written to a new flags file so operators see what they can switch.
DEFAULT_FLAGS: dict[str, dict[str, Any]] = {
    "flags": {
        "demo-data": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
        "weekly-digest": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
    }
}


class FileFlagProvider(InMemoryProvider):
    """Reads `{"flags": {key: {state, variants, defaultVariant}}}` (flagd's format, without targeting rules)
    and re-reads the file when its modification time changes (looked at no more than every `check_seconds`)."""

    def __init__(self, path: Path, *, check_seconds: float = 1.0) -> None:
        super().__init__({})
        self.path = path
        self.check_seconds = check_seconds
        self._mtime: float | None = None
        self._checked_at = float("-inf")
        self.reload_if_changed()

    def get_metadata(self) -> Metadata:
        return Metadata(name="gatherly-file")

    def reload_if_changed(self) -> None:
        self._checked_at = time.monotonic()
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._flags, self._mtime = {}, None
            return
        if mtime == self._mtime:
            return
        try:
            document = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return  # a half-written file: keep the flags we have, look again next time
        self._flags = {key: _flag_from(spec) for key, spec in document.get("flags", {}).items()}
        self._mtime = mtime

    def _resolve(
        self, flag_key: str, default_value: Any, evaluation_context: EvaluationContext | None
    ) -> FlagResolutionDetails[Any]:
        if time.monotonic() - self._checked_at >= self.check_seconds:
            self.reload_if_changed()
        flag = self._flags.get(flag_key)
        if flag is not None and flag.state == InMemoryFlag.State.DISABLED:
            return FlagResolutionDetails(value=default_value, reason="DISABLED")
        return super()._resolve(flag_key, default_value, evaluation_context)


def _flag_from(spec: dict[str, Any]) -> InMemoryFlag[Any]:
    return InMemoryFlag(
        default_variant=spec["defaultVariant"],
        variants=dict(spec["variants"]),
        state=InMemoryFlag.State(spec.get("state", "ENABLED")),
    )


def ensure_flags_file(path: Path) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(DEFAULT_FLAGS, indent=2) + "\n")


class Flags:
    """What services hold: `await flags.enabled("new-search", user_id=...)`."""

    def __init__(self, provider: FeatureProvider, domain: str = "gatherly") -> None:
        api.set_provider(provider, domain=domain)
        self.client: OpenFeatureClient = api.get_client(domain)

    async def enabled(self, key: str, default: bool = False, **context: str) -> bool:
        evaluation = EvaluationContext(targeting_key=context.pop("user_id", None), attributes=dict(context))
        return await self.client.get_boolean_value_async(key, default, evaluation)

    async def value(self, key: str, default: Any) -> Any:
        return await self.client.get_object_value_async(key, default)
