"""Property tests of the text policy over EVERY text field of the merged OpenAPI (path, query and body), on each
database backend: hostile text (NUL, lone surrogates) is a 422 naming the field, and any other text never causes a
5xx and is stored and returned in NFC. A field a new service adds is covered without changing this file."""

from __future__ import annotations

import json
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatherly.app.testing import Person, RunningGatherly, sign_up

# The fields are found in the merged /api/openapi.json, which only the in-process gateway serves (the stack's nginx
# routes each prefix to its service and has no merged document).
pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.in_process_only]


@dataclass(frozen=True)
class TextField:
    method: str
    path: str  # the OpenAPI template, e.g. /api/groups/{group}
    where: str  # path | query | body
    name: str  # as the 422 names it: `q`, `group`, `topics.0`
    example: dict[str, Any]  # a valid body to put the text into (body fields)

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path} {self.where}:{self.name}"


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return _resolve(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    options = [o for o in schema.get("anyOf", []) if o.get("type") != "null"]
    return _resolve(options[0], components) if len(options) == 1 else schema


def _is_text(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    resolved = _resolve(schema, components)
    return resolved.get("type") == "string" and "enum" not in resolved and "format" not in resolved


def text_fields(document: dict[str, Any]) -> list[TextField]:
    components = document["components"]["schemas"]
    fields = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                if parameter["in"] in ("path", "query") and _is_text(parameter["schema"], components):
                    fields.append(TextField(method, path, parameter["in"], parameter["name"], {}))
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if content is None:
                continue
            body = _resolve(content["schema"], components)
            example = (body.get("examples") or [{}])[0]
            for name, schema in body.get("properties", {}).items():
                resolved = _resolve(schema, components)
                if _is_text(resolved, components):
                    fields.append(TextField(method, path, "body", name, example))
                elif resolved.get("type") == "array" and _is_text(resolved.get("items", {}), components):
                    fields.append(TextField(method, path, "body", f"{name}.0", example))
    return fields


@dataclass
class World:
    running: RunningGatherly
    organizer: Person
    group_id: str
    fields: list[TextField]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(gatherly: RunningGatherly) -> World:
    organizer = await sign_up(gatherly, display_name="Property Owner")
    created = await gatherly.client.post("/api/groups", json={"name": "Properties"}, headers=organizer.auth)
    document = (await gatherly.client.get("/api/openapi.json")).json()
    fields = text_fields(document)
    assert len(fields) >= 30, [str(f) for f in fields]  # the users and groups services alone have more
    return World(gatherly, organizer, created.json()["id"], fields)


def request_for(world: World, field: TextField, value: str) -> tuple[str, str, dict[str, str], bytes | None]:
    """(method, url, headers, raw body) with `value` in `field` and valid values everywhere else."""
    real = {"group": world.group_id, "user_id": world.organizer.user_id}
    path = field.path
    # Every {name} of the template, also one that is not a whole segment (`/api/calendar/{token}.ics`).
    for name in re.findall(r"\{(\w+)\}", field.path):
        text = value if (field.where, field.name) == ("path", name) else real.get(name, "x")
        path = path.replace("{" + name + "}", urllib.parse.quote(text, safe=""))
    if field.where == "query":
        path += "?" + urllib.parse.urlencode({field.name: value})
    body = None
    headers = dict(world.organizer.auth)
    if field.where == "body" or field.example:
        document = json.loads(json.dumps(field.example))
        if field.where == "body":
            name, _, index = field.name.partition(".")
            document[name] = [value] if index else value
        # ensure_ascii: a lone surrogate travels as a \\ud800 escape, the way a hostile client sends it.
        body = json.dumps(document, ensure_ascii=True).encode()
        headers["content-type"] = "application/json"
    return field.method.upper(), path, headers, body


def with_char_inside(text: st.SearchStrategy[str], chars: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.tuples(text, chars, st.integers(0, 8)).map(lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :])


ordinary = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
COMBINING = "\u0301\u0308\u0327\u200d\u200c\u202e"  # non-NFC sequences, joiners, a bidi override


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
async def test_nul_or_a_lone_surrogate_in_any_text_field_is_a_422_naming_it(world: World, data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(world.fields), label="field")
    # A lone surrogate cannot be written in a URL (UTF-8 cannot encode it): path and query get NUL.
    bad = st.sampled_from(["\x00", "\ud800", "\udfff"]) if field.where == "body" else st.just("\x00")
    value = data.draw(with_char_inside(ordinary, bad), label="value")
    if field.where == "path":
        value = value.replace("/", "")  # a path parameter is one segment: with a slash no route would match
    method, url, headers, body = request_for(world, field, value)
    response = await world.running.client.request(method, url, headers=headers, content=body)
    assert response.status_code == 422, (str(field), response.text)
    assert field.name in [error["field"] for error in response.json()["errors"]], (str(field), response.text)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
async def test_any_other_text_in_any_field_is_never_a_5xx_and_comes_back_in_nfc(
    world: World, data: st.DataObject
) -> None:
    field = data.draw(st.sampled_from(world.fields), label="field")
    value = data.draw(st.one_of(ordinary, with_char_inside(ordinary, st.sampled_from(COMBINING))), label="value")
    method, url, headers, body = request_for(world, field, value)
    response = await world.running.client.request(method, url, headers=headers, content=body)
    assert response.status_code < 500, (str(field), response.text)
    if response.status_code < 300 and response.content:
        strings = _strings(response.json())
        assert all(unicodedata.is_normalized("NFC", s) for s in strings), (str(field), response.text)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [k, *_strings(v)]]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


async def test_text_is_stored_in_nfc(world: World) -> None:
    decomposed, composed = "Cafe\u0301 Lyon", "Caf\u00e9 Lyon"
    client, auth = world.running.client, world.organizer.auth
    fields = {"name": decomposed, "description": decomposed, "city": decomposed, "questions": [decomposed]}
    group = await client.post("/api/groups", json=fields, headers=auth)
    stored = (await client.get(f"/api/groups/{group.json()['id']}", headers=auth)).json()
    assert [stored[k] for k in ("name", "description", "city")] == [composed] * 3 and stored["questions"] == [composed]
    await client.patch("/api/users/me", json={"display_name": decomposed, "bio": decomposed}, headers=auth)
    me = (await client.get("/api/users/me", headers=auth)).json()
    assert me["display_name"] == composed and me["bio"] == composed
    found = await client.get("/api/groups", params={"q": "Caf\u0065\u0301"})  # a decomposed query finds it
    assert group.json()["id"] in [item["id"] for item in found.json()["items"]]
