"""The documents that describe the boundary, checked in under docs/: merged OpenAPI and event catalog (drift-tested)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from gatherly.app.compose import Process
from gatherly.app.gateway import merged_openapi
from gatherly.app.services import ALL
from gatherly.kernel.catalog import asyncapi, markdown
from gatherly.kernel.settings import Settings

DOCS = Path(__file__).resolve().parents[4] / "docs"
OPENAPI_FILE = DOCS / "openapi.json"
EVENTS_FILE = DOCS / "events.md"


def openapi_document() -> dict[str, Any]:
    """The merged OpenAPI of all five services, exactly as `/api/openapi.json` serves it."""
    with tempfile.TemporaryDirectory() as scratch:
        process = Process(Settings(data_dir=Path(scratch)), serve_web=False)
        return merged_openapi(process.hosts)


def catalog_document() -> dict[str, Any]:
    return asyncapi(list(ALL.values()))


def as_text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def write_documents() -> list[Path]:
    OPENAPI_FILE.write_text(as_text(openapi_document()))
    EVENTS_FILE.write_text(markdown(catalog_document()))
    return [OPENAPI_FILE, EVENTS_FILE]
