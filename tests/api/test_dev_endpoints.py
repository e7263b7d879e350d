"""/dev/mail shows every confirmation and reset link: only on a loopback bind, or when asked for (with a warning)."""

from __future__ import annotations

from pathlib import Path

import httpx
from structlog.testing import capture_logs

from gatherly.app.compose import Process
from gatherly.kernel.settings import Settings


async def mailbox_of(process: Process) -> httpx.Response:
    # No lifespan needed: the page reads the mail folder only.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=process), base_url="http://x") as client:
        return await client.get("/dev/mail")


async def test_dev_mail_is_not_served_on_a_public_bind_by_default(tmp_path: Path) -> None:
    response = await mailbox_of(Process(Settings(data_dir=tmp_path, host="0.0.0.0")))
    assert "Dev mailbox" not in response.text


async def test_dev_mail_is_served_on_loopback(tmp_path: Path) -> None:
    response = await mailbox_of(Process(Settings(data_dir=tmp_path, host="127.0.0.1")))
    assert response.status_code == 200 and "Dev mailbox" in response.text


async def test_dev_mode_asked_for_on_a_public_bind_is_served_with_a_loud_warning(tmp_path: Path) -> None:
    with capture_logs() as logs:
        process = Process(Settings(data_dir=tmp_path, host="0.0.0.0", dev=True))
    assert any(entry["log_level"] == "warning" and "DEV MODE" in entry["event"] for entry in logs)
    assert "Dev mailbox" in (await mailbox_of(process)).text
