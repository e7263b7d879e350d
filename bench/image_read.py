"""Benchmark: what `GET /api/images/{id}` costs in process, without sockets (issue #9), beside `/livez`.

A whole `gatherly up` (every service, SQLite, local storage unless --s3-endpoint is given) is started in this process,
one ready image is uploaded as a client does, and the composed ASGI app is called directly
(`bench/request_layers.call`), measured in turn with `/livez` round after round. With --profile FILE, cProfile's view
goes to FILE. To measure other code (e.g. before a change), put its packages first on PYTHONPATH.

    uv run python bench/image_read.py [--requests 1000] [--rounds 5] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from PIL import Image
from request_layers import Variant, warm_measure_and_profile

from gatherly.app.testing import FAST_SETTINGS, running_gatherly, send_upload, sign_up


async def main(requests: int, rounds: int, profile: Path | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_gatherly(Path(tmp), relay_poll_interval=0.5, **FAST_SETTINGS) as gatherly:
            person = await sign_up(gatherly, display_name="Ada Lovelace")
            client = gatherly.client
            picture = io.BytesIO()
            Image.new("RGB", (800, 600), (40, 120, 200)).save(picture, "JPEG", quality=85)
            data = picture.getvalue()
            body = {"purpose": "event_cover", "content_type": "image/jpeg", "size_bytes": len(data)}
            slot = (await client.post("/api/images/uploads", json=body, headers=person.auth)).json()
            (await send_upload(client, slot["upload"], data)).raise_for_status()
            image_id = slot["image_id"]
            (await client.post(f"/api/images/{image_id}/complete", headers=person.auth)).raise_for_status()
            for _ in range(600):  # the processing task makes its variants: up to a minute
                image = (await client.get(f"/api/images/{image_id}", headers=person.auth)).json()
                if image["status"] != "pending":
                    break
                await asyncio.sleep(0.1)
            assert image["status"] == "ready", image
            bearer = ((b"authorization", f"Bearer {person.access_token}".encode()),)
            process = gatherly.process
            variants = [
                Variant("GET /livez", process, "/livez"),
                Variant("GET /api/images/{id} (bearer)", process, f"/api/images/{image_id}", bearer),
            ]
            await warm_measure_and_profile(variants, requests, rounds, profile)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds, args.profile))
