"""Logs: JSON lines off a terminal, tracebacks without local variables, secrets redacted wherever they appear."""

from __future__ import annotations

import io
import json
import logging

import structlog

from gatherly.app.logging import configure_logging
from gatherly.kernel.settings import Settings


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def log_a_failed_login(stream: io.StringIO) -> None:
    def log_in(email: str, password: str) -> None:
        settings = Settings(smtp_password="smtp-secret-1", database_url="postgresql+asyncpg://app:db-secret-2@db/x")
        raise RuntimeError(f"database down: {settings.database_url_for('users')}")

    typed = "plaintext-" + "password-3"  # built here so the traceback's source lines do not quote it
    try:
        log_in("ann@example.org", typed)
    except RuntimeError:
        structlog.get_logger("test").exception(
            "login failed",
            password="plaintext-password-3",
            headers={"Authorization": "Bearer eyJhbGciOi.token-4", "Cookie": "session=cookie-5"},
            detail="sent Bearer eyJhbGciOi.token-6 with refresh_token=opaque-7",
        )


def test_an_error_log_carries_the_traceback_but_no_locals_and_no_secrets() -> None:
    for stream in (io.StringIO(), Terminal()):
        configure_logging("INFO", stream=stream)
        try:
            log_a_failed_login(stream)
        finally:
            structlog.reset_defaults()
        text = stream.getvalue()
        assert "Traceback" in text and "RuntimeError: database down" in text and "log_in" in text
        for secret in (
            "plaintext-password-3",
            "smtp-secret-1",
            "db-secret-2",
            "token-4",
            "cookie-5",
            "token-6",
            "opaque-7",
        ):
            assert secret not in text, (secret, text)


def test_logs_are_json_lines_unless_written_to_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        structlog.get_logger("test").info("hello", who="ann")
        logging.getLogger("uvicorn.error").warning("from the standard library token=abc123")
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "hello" and lines[0]["who"] == "ann"
    assert lines[1]["event"] == "from the standard library token=[redacted]"
    terminal = Terminal()
    configure_logging("INFO", stream=terminal)
    try:
        structlog.get_logger("test").info("hello")
    finally:
        structlog.reset_defaults()
    assert not terminal.getvalue().startswith("{")


def test_settings_never_show_their_secrets() -> None:
    settings = Settings(
        smtp_password="smtp-secret", database_url="postgresql+asyncpg://u:pw-secret@h/gatherly_{service}"
    )
    assert "smtp-secret" not in repr(settings) and "pw-secret" not in repr(settings)
    assert "pw-secret" not in str(settings.model_dump())
    assert settings.database_url_for("users") == "postgresql+asyncpg://u:pw-secret@h/gatherly_users"
