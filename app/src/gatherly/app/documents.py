"""The documents that describe the boundary, checked in under docs/: merged OpenAPI, its reference in docs/api.md,
and the event catalog (all drift-tested)."""

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
API_FILE = DOCS / "api.md"
# docs/api.md is written by hand down to this line; everything after it is generated from docs/openapi.json.
REFERENCE_MARKER = "<!-- Generated below from docs/openapi.json by `make docs`: edit the code, not this part. -->"
# Statuses every operation may answer (the boundary's, see the conventions), left out of each row.
EVERYWHERE = {"414", "431", "500"}


def openapi_document() -> dict[str, Any]:
    """The merged OpenAPI of all five services, exactly as `/api/openapi.json` serves it."""
    with tempfile.TemporaryDirectory() as scratch:
        process = Process(Settings(data_dir=Path(scratch)), serve_web=False)
        return merged_openapi(process.hosts)


def catalog_document() -> dict[str, Any]:
    return asyncapi(list(ALL.values()))


def as_text(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _type_of(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return f"`{spec['$ref'].rsplit('/', 1)[-1]}`"
    if "anyOf" in spec:
        return " or ".join(_type_of(option) for option in spec["anyOf"])
    kind = spec.get("type", "any")
    if kind == "array":
        return f"list of {_type_of(spec.get('items', {}))}"
    if kind == "object" and isinstance(spec.get("additionalProperties"), dict):
        return f"map of {_type_of(spec['additionalProperties'])}"
    if spec.get("format"):
        return f"{kind} ({spec['format']})"
    return str(kind)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _token(op: dict[str, Any]) -> str:
    security = op.get("security")
    if not security:
        return "no"
    return "optional" if {} in security else "required"


def _body(op: dict[str, Any]) -> str:
    content = op.get("requestBody", {}).get("content", {})
    shapes = [
        _type_of(media["schema"]) + ("" if kind == "application/json" else f" ({kind})")
        for kind, media in content.items()
    ]
    return ", ".join(shapes) or "—"


def _success(op: dict[str, Any]) -> str:
    parts = []
    for status, response in op["responses"].items():
        if int(status) < 400:
            schemas = [media.get("schema", {}) for media in response.get("content", {}).values()]
            named = [_type_of(s) for s in schemas if "$ref" in s or s.get("type") == "array"]
            parts.append(f"{status} {', '.join(named)}".strip())
    return "; ".join(parts)


def _shape(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"#### `{name}`", ""]
    if "enum" in schema:
        return [*lines, "One of " + ", ".join(f"`{value}`" for value in schema["enum"]) + ".", ""]
    if schema.get("description"):
        lines += [_cell(schema["description"]), ""]
    required = set(schema.get("required", []))
    lines += ["| field | type | required | notes |", "|---|---|---|---|"]
    for field, spec in schema.get("properties", {}).items():
        notes = _cell(spec.get("description", ""))
        if "default" in spec:
            notes = f"default `{json.dumps(spec['default'])}`" + (f"; {notes}" if notes else "")
        lines.append(f"| `{field}` | {_type_of(spec)} | {'yes' if field in required else 'no'} | {notes} |")
    return [*lines, ""]


def api_reference(openapi: dict[str, Any]) -> str:
    """The generated half of docs/api.md: every operation by service, then every request and response shape."""
    lines = [
        "## Reference",
        "",
        f"Every operation may also answer {', '.join(sorted(EVERYWHERE))} (see the conventions above); the other",
        "statuses each one can answer are listed with it. Bodies are JSON unless said. `token`: whether the",
        "operation needs a bearer access token (`optional`: it answers anonymous callers too, and shows more to a",
        "member).",
        "",
    ]
    for tag in openapi["tags"]:
        rows = [
            (path, method, op)
            for path, ops in openapi["paths"].items()
            for method, op in ops.items()
            if tag["name"] in op.get("tags", [])
        ]
        lines += [f"### {tag['name']}", ""]
        if not rows:
            lines += ["No HTTP operations yet.", ""]
            continue
        lines += [
            "| operation | what | token | parameters | body | success | other statuses |",
            "|---|---|---|---|---|---|---|",
        ]
        for path, method, op in rows:
            parameters = ", ".join(
                f"`{p['name']}` ({p['in']}{'' if p.get('required') else ', optional'})"
                for p in op.get("parameters", [])
            )
            errors = " ".join(sorted((s for s in op["responses"] if int(s) >= 400 and s not in EVERYWHERE), key=int))
            lines.append(
                f"| `{method.upper()} {path}` | {_cell(op.get('summary', ''))} | {_token(op)} | {parameters or '—'} "
                f"| {_body(op)} | {_success(op)} | {errors} |"
            )
        lines.append("")
    lines += ["### Shapes", ""]
    for name, schema in sorted(openapi["components"]["schemas"].items()):
        lines += _shape(name, schema)
    return "\n".join(lines).rstrip() + "\n"


def api_page(current: str, openapi: dict[str, Any]) -> str:
    """docs/api.md: its hand-written conventions (`current` down to the marker) and the generated reference."""
    if REFERENCE_MARKER not in current:
        raise ValueError(f"docs/api.md lacks the line {REFERENCE_MARKER!r} that starts its generated part")
    conventions = current.split(REFERENCE_MARKER, 1)[0]
    return f"{conventions}{REFERENCE_MARKER}\n\n{api_reference(openapi)}"


def write_documents() -> list[Path]:
    openapi = openapi_document()
    OPENAPI_FILE.write_text(as_text(openapi))
    API_FILE.write_text(api_page(API_FILE.read_text(), openapi))
    EVENTS_FILE.write_text(markdown(catalog_document()))
    return [OPENAPI_FILE, API_FILE, EVENTS_FILE]
