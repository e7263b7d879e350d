"""Settings refuse what this build cannot do, at start and with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gatherly.kernel.settings import LogBackend, Settings


def test_an_unknown_log_backend_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValidationError, match="'embedded' or 'kafka'"):
        Settings(log_backend="rabbitmq")


def test_the_kafka_settings_refuse_nonsense() -> None:
    with pytest.raises(ValidationError, match="kafka_replication_factor"):
        Settings(log_backend="kafka", kafka_replication_factor=0)
    with pytest.raises(ValidationError, match="kafka_session_timeout"):
        Settings(log_backend="kafka", kafka_session_timeout=-1)


def test_the_embedded_log_backend_is_the_default() -> None:
    assert Settings().log_backend is LogBackend.EMBEDDED


def test_every_setting_is_documented_in_operations_md() -> None:
    operations = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    missing = [name for name in Settings.model_fields if f"`GATHERLY_{name.upper()}`" not in operations]
    assert not missing, f"settings missing from docs/operations.md: {missing}"
