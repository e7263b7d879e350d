"""Feature flags, resilience and mail: the platform pieces services lean on."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest

from gatherly.kernel.flags import DEFAULT_FLAGS, Flags, flag_provider
from gatherly.kernel.mail import FileMailer, compose
from gatherly.kernel.resilience import CircuitOpen, Resilience
from gatherly.kernel.settings import Settings


def write_flags(path: Path, flags: dict[str, Any]) -> None:
    """Write the file as an operator's editor would: whole, then renamed into place."""
    draft = path.with_suffix(".draft")
    draft.write_text(json.dumps({"flags": flags}))
    # File times move in clock ticks (a few ms): two writes inside one tick would look like one to the watcher.
    before = path.stat().st_mtime_ns if path.exists() else 0
    stamp = max(time.time_ns(), before + 10_000_000)
    os.utime(draft, ns=(stamp, stamp))
    draft.replace(path)


def switch(default_variant: str, **extra: Any) -> dict[str, Any]:
    return {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": default_variant, **extra}


async def eventually(check: Callable[[], Awaitable[bool]], path: Path, seconds: float = 5.0) -> None:
    """The file is re-read on the provider's own schedule (every check_seconds). flagd's file watcher notes the
    file's time after reading it at start, so a change saved in that instant is seen only at the next save: save
    again (touch) while waiting, as an operator whose change did not show would."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    touched = loop.time()
    while not await check():
        assert loop.time() < deadline, "the flags never followed the file"
        if loop.time() - touched > 0.5:
            write_flags(path, json.loads(path.read_text())["flags"])
            touched = loop.time()
        await asyncio.sleep(0.02)


@pytest.fixture
async def file_flags(tmp_path: Path) -> AsyncIterator[tuple[Path, Flags]]:
    path = tmp_path / "flags.json"
    write_flags(path, {"new-search": switch("off")})
    flags = Flags(flag_provider("file", path, check_seconds=0.05), domain=f"test-flags-{tmp_path.name}")
    await flags.start(timeout=5)
    yield path, flags
    flags.close()


async def test_a_flag_follows_its_file_when_the_file_changes(file_flags: tuple[Path, Flags]) -> None:
    path, flags = file_flags
    assert await flags.enabled("new-search") is False
    write_flags(path, {"new-search": switch("on")})
    await eventually(lambda: flags.enabled("new-search"), path)


async def test_an_unknown_or_disabled_flag_gives_the_default(file_flags: tuple[Path, Flags]) -> None:
    path, flags = file_flags
    write_flags(path, {"old": {"state": "DISABLED", "variants": {"on": True}, "defaultVariant": "on"}})
    await eventually(lambda: flags.enabled("new-search", default=True), path)  # gone from the file: the default
    assert await flags.enabled("old", default=False) is False
    assert await flags.enabled("missing", default=True) is True


async def test_a_half_written_flags_file_keeps_the_last_good_flags(file_flags: tuple[Path, Flags]) -> None:
    path, flags = file_flags
    write_flags(path, {"new-search": switch("on")})
    await eventually(lambda: flags.enabled("new-search"), path)
    path.write_text('{"flags": {')
    await asyncio.sleep(0.3)  # several re-reads of the broken file
    assert await flags.enabled("new-search") is True
    write_flags(path, {"new-search": switch("off")})
    await eventually(lambda: _not(flags.enabled("new-search", default=True)), path)


async def _not(value: Awaitable[bool]) -> bool:
    return not await value


async def test_targeting_rules_pick_the_variant_per_person(file_flags: tuple[Path, Flags]) -> None:
    path, flags = file_flags
    beta = {"if": [{"in": [{"var": "targetingKey"}, ["ann", "bob"]]}, "on", "off"]}
    # flagd's fractional rollout: the same person always lands in the same bucket.
    half = {"fractional": [{"var": "targetingKey"}, ["on", 50], ["off", 50]]}
    write_flags(path, {"new-search": switch("off", targeting=beta), "new-map": switch("off", targeting=half)})
    await eventually(lambda: flags.enabled("new-search", user_id="ann"), path)
    assert await flags.enabled("new-search", user_id="bob") is True
    assert await flags.enabled("new-search", user_id="cleo") is False
    assert await flags.enabled("new-search") is False  # nobody logged in
    rollout = [await flags.enabled("new-map", user_id=f"user-{n}") for n in range(400)]
    assert 120 < sum(rollout) < 280, "about half the people"
    assert rollout == [await flags.enabled("new-map", user_id=f"user-{n}") for n in range(400)], "sticky per person"


async def test_the_flagd_setting_hands_the_provider_its_flagd_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # flagd's server is not available from this machine's registries; its in-process resolver reading a file given
    # by FLAGD_* variables shows the "flagd" setting passes flagd's own configuration through untouched.
    source = tmp_path / "from-flagd.json"
    write_flags(source, {"new-search": switch("on")})
    monkeypatch.setenv("FLAGD_RESOLVER", "in-process")
    monkeypatch.setenv("FLAGD_OFFLINE_FLAG_SOURCE_PATH", str(source))
    flags = Flags(flag_provider("flagd", tmp_path / "unused.json"), domain="test-flags-flagd")
    try:
        await flags.start(timeout=5)
        assert await flags.enabled("new-search") is True
        assert not (tmp_path / "unused.json").exists()
    finally:
        flags.close()


async def test_a_missing_flags_file_is_created_with_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "new" / "flags.json"
    flags = Flags(flag_provider("file", path), domain="test-flags-defaults")
    try:
        await flags.start(timeout=5)
        assert json.loads(path.read_text()) == DEFAULT_FLAGS
        assert await flags.enabled("demo-data") is True
    finally:
        flags.close()


async def test_retries_absorb_a_passing_failure() -> None:
    resilience = Resilience(attempts=3, wait_initial=0.001, wait_max=0.002)
    calls = {"n": 0}

    async def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError("blip")
        return "ok"

    assert await resilience.call("flaky", flaky) == "ok"
    assert calls["n"] == 3


async def test_the_circuit_opens_after_repeated_failures_and_then_fails_fast() -> None:
    resilience = Resilience(failure_threshold=3, open_seconds=60, attempts=1)
    calls = {"n": 0}

    async def down() -> None:
        calls["n"] += 1
        raise ConnectionError("refused")

    for _ in range(3):
        with pytest.raises(ConnectionError):
            await resilience.call("smtp", down)
    with pytest.raises(CircuitOpen):
        await resilience.call("smtp", down)
    assert calls["n"] == 3  # the open circuit did not call the dependency


async def test_the_file_mailer_writes_a_readable_rfc5322_message(tmp_path: Path) -> None:
    mailer = FileMailer(tmp_path / "mail")
    await mailer.send(
        compose(
            sender="Gatherly <no-reply@g.local>",
            to="ann@example.org",
            subject="Hello",
            text="Visit http://localhost:8000/confirm?token=abc",
            html="<p>Hi</p>",
        )
    )
    (path,) = list((tmp_path / "mail").glob("*.eml"))
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert message["To"] == "ann@example.org" and message["Subject"] == "Hello"
    assert "confirm?token=abc" in message.get_body(preferencelist=("plain",)).get_content()


def test_settings_come_from_gatherly_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GATHERLY_PORT", "9123")
    monkeypatch.setenv("GATHERLY_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GATHERLY_DATABASE_URL", "postgresql+asyncpg://u:p@db/gatherly_{service}")
    settings = Settings()
    assert settings.port == 9123
    assert settings.effective_public_url == "http://localhost:9123"
    assert settings.database_url_for("groups") == "postgresql+asyncpg://u:p@db/gatherly_groups"
    assert settings.log_path == tmp_path / "log.db"


def test_embedded_mode_uses_one_sqlite_file_per_service(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url_for("users").endswith(f"{tmp_path}/users.db")
    assert settings.should_migrate_on_start
