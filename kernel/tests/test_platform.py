"""Feature flags, resilience and mail: the platform pieces services lean on."""

from __future__ import annotations

import json
import os
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest

from gatherly.kernel.flags import FileFlagProvider, Flags
from gatherly.kernel.mail import FileMailer, compose
from gatherly.kernel.resilience import CircuitOpen, Resilience
from gatherly.kernel.settings import Settings


def write_flags(path: Path, enabled: bool, mtime: float) -> None:
    variant = "on" if enabled else "off"
    document = {
        "flags": {"new-search": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": variant}}
    }
    path.write_text(json.dumps(document))
    os.utime(path, (mtime, mtime))


async def test_a_flag_follows_its_file_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_flags(path, enabled=False, mtime=1_000_000)
    flags = Flags(FileFlagProvider(path, check_seconds=0), domain="test-flags-1")
    assert await flags.enabled("new-search") is False
    write_flags(path, enabled=True, mtime=1_000_010)
    assert await flags.enabled("new-search") is True


async def test_an_unknown_or_disabled_flag_gives_the_default(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text(
        json.dumps({"flags": {"old": {"state": "DISABLED", "variants": {"on": True}, "defaultVariant": "on"}}})
    )
    flags = Flags(FileFlagProvider(path, check_seconds=0), domain="test-flags-2")
    assert await flags.enabled("old", default=False) is False
    assert await flags.enabled("missing", default=True) is True


async def test_a_half_written_flags_file_keeps_the_last_good_flags(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    write_flags(path, enabled=True, mtime=1_000_000)
    flags = Flags(FileFlagProvider(path, check_seconds=0), domain="test-flags-3")
    assert await flags.enabled("new-search") is True
    path.write_text('{"flags": {')
    os.utime(path, (1_000_020, 1_000_020))
    assert await flags.enabled("new-search") is True


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
