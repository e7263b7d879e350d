"""The checked-in documents tell the truth: docs/openapi.json, the reference in docs/api.md and docs/events.md are
what the code generates, the OpenAPI documents errors as Problem under application/problem+json, and the catalog
covers every event."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gatherly.app.compose import Process
from gatherly.app.documents import (
    API_FILE,
    EVENTS_FILE,
    OPENAPI_FILE,
    REFERENCE_MARKER,
    api_page,
    as_text,
    catalog_document,
    openapi_document,
)
from gatherly.app.gateway import merged_openapi
from gatherly.app.services import ALL
from gatherly.contracts.base import IntegrationEvent, all_schemas
from gatherly.kernel.catalog import markdown, message_name
from gatherly.kernel.limits import PROBLEM_JSON
from gatherly.kernel.settings import Settings

REGENERATE = "run `make docs` and commit the result"


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return openapi_document()


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, ops in document["paths"].items() for method, op in ops.items()]


def test_the_checked_in_openapi_is_what_the_code_serves(openapi: dict[str, Any]) -> None:
    assert OPENAPI_FILE.read_text() == as_text(openapi), f"docs/openapi.json drifted from the code: {REGENERATE}"


def test_the_api_reference_is_generated_from_the_checked_in_openapi() -> None:
    page = API_FILE.read_text()
    checked_in = json.loads(OPENAPI_FILE.read_text())
    assert page == api_page(page, checked_in), f"docs/api.md drifted from docs/openapi.json: {REGENERATE}"


def test_the_api_reference_names_every_operation_with_its_statuses() -> None:
    page = API_FILE.read_text()
    reference = page.split(REFERENCE_MARKER, 1)[1]
    for path, method, op in operations(json.loads(OPENAPI_FILE.read_text())):
        [row] = [line for line in reference.splitlines() if line.startswith(f"| `{method.upper()} {path}` |")]
        for status in op["responses"]:
            assert status in row or status in ("414", "431", "500"), (method, path, status)
    assert "#### `Problem`" in reference


def test_the_api_page_refuses_to_lose_its_conventions() -> None:
    with pytest.raises(ValueError, match="generated part"):
        api_page("# HTTP API\n\nconventions without the marker\n", {"tags": [], "paths": {}, "components": {}})


def test_every_error_response_is_a_problem_as_problem_json(openapi: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in openapi["components"]["schemas"]
    for path, method, op in operations(openapi):
        errors = {status: r for status, r in op["responses"].items() if int(status) >= 400}
        assert {"422", "500"} <= set(errors) or "422" not in errors, (method, path)
        for status, response in errors.items():
            assert response["content"] == {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}, (
                method,
                path,
                status,
            )


def test_operations_have_stable_ids_one_tag_per_service_and_a_summary(openapi: dict[str, Any]) -> None:
    ids = [op["operationId"] for _, _, op in operations(openapi)]
    assert len(ids) == len(set(ids))
    for path, method, op in operations(openapi):
        service = op["tags"][0]
        assert op["tags"] == [service] and service in ALL, (method, path)
        assert re.fullmatch(rf"{service}_[a-z]+(_[a-z]+)+", op["operationId"]), op["operationId"]
        assert op.get("summary"), (method, path)
    assert {t["name"] for t in openapi["tags"]} == set(ALL)


def test_operations_that_need_a_token_say_so(openapi: dict[str, Any]) -> None:
    me = openapi["paths"]["/api/users/me"]["get"]
    assert me["security"] == [{"bearer": []}] and "401" in me["responses"]
    search = openapi["paths"]["/api/groups"]["get"]
    assert search["security"] == [{}, {"bearer": []}]  # anonymous or with a token
    assert "security" not in openapi["paths"]["/api/auth/login"]["post"]
    assert openapi["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_request_bodies_carry_examples(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    for path, method, op in operations(openapi):
        if "application/json" in op.get("requestBody", {}).get("content", {}):  # not files (text/calendar)
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            ref = next(o["$ref"] for o in [schema, *schema.get("anyOf", [])] if "$ref" in o).rsplit("/", 1)[-1]
            assert schemas[ref].get("examples"), (method, path, ref)


def _host(name: str, schemas: dict[str, Any]) -> Any:
    document = {"paths": {}, "components": {"schemas": schemas}}
    return SimpleNamespace(
        name=name, definition=SimpleNamespace(title=name), app=SimpleNamespace(openapi=lambda: document)
    )


def test_two_services_cannot_describe_different_shapes_under_one_schema_name() -> None:
    """The merge used to keep the last service's LocationBody for all three: the users' and groups' (which refuse
    unknown fields) were described by the events' (which did not)."""
    point = {"type": "object", "properties": {"lat": {"type": "number"}}, "additionalProperties": False}
    lenient = {**point, "additionalProperties": True}
    shared = merged_openapi([_host("users", {"LocationBody": point}), _host("groups", {"LocationBody": point})])
    assert shared["components"]["schemas"]["LocationBody"] == point
    with pytest.raises(ValueError, match="users and events services define different schemas named LocationBody"):
        merged_openapi([_host("users", {"LocationBody": point}), _host("events", {"LocationBody": lenient})])


def test_every_service_s_schemas_are_in_the_merged_document_as_it_defines_them(openapi: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        hosts = Process(Settings(data_dir=Path(scratch)), serve_web=False).hosts
        for host in hosts:
            for name, schema in host.app.openapi()["components"]["schemas"].items():
                assert openapi["components"]["schemas"][name] == schema, (host.name, name)


# A browser's PushSubscription carries fields of its own (expirationTime, and more in time): its body takes what it
# knows and ignores the rest, so a browser update cannot break subscribing.
TAKES_UNKNOWN_FIELDS = {"PushSubscriptionBody", "PushKeys"}


def _shapes_under(schema: dict[str, Any], schemas: dict[str, Any], seen: set[str]) -> None:
    """The names of the object shapes `schema` reaches through its references, into `seen`."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            seen.add(name)
            _shapes_under(schemas[name], schemas, seen)
        return
    children = [*schema.get("anyOf", []), *schema.get("properties", {}).values()]
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            children.append(schema[key])
    for child in children:
        _shapes_under(child, schemas, seen)


def test_every_request_body_refuses_fields_it_does_not_have(openapi: dict[str, Any]) -> None:
    """A misspelt field is a 422 naming it, never silently dropped (the body would otherwise "succeed" without it):
    every shape a JSON request body reaches says additionalProperties: false."""
    schemas = openapi["components"]["schemas"]
    shapes: set[str] = set()
    for _, _, op in operations(openapi):
        if media := op.get("requestBody", {}).get("content", {}).get("application/json"):
            _shapes_under(media["schema"], schemas, shapes)
    lenient = {
        name
        for name in shapes
        if "properties" in schemas[name] and schemas[name].get("additionalProperties") is not False
    }
    assert lenient == TAKES_UNKNOWN_FIELDS, sorted(lenient - TAKES_UNKNOWN_FIELDS)


# --- the event catalog ----------------------------------------------------------------------------------------


def test_the_checked_in_event_catalog_is_what_the_code_generates() -> None:
    assert EVENTS_FILE.read_text() == markdown(catalog_document()), f"docs/events.md drifted: {REGENERATE}"


def test_the_catalog_lists_every_event_in_contracts() -> None:
    catalog = catalog_document()
    events = [e for e in all_schemas().values() if e.__module__.startswith("gatherly.contracts.")]
    assert len(events) >= 20
    for event in events:
        assert message_name(event) in catalog["components"]["messages"], event.TYPE
        assert message_name(event) in catalog["channels"][event.TOPIC]["messages"], event.TYPE


def test_no_service_publishes_or_consumes_an_event_the_catalog_lacks() -> None:
    catalog = catalog_document()
    messages = catalog["components"]["messages"]
    # An event class defined outside contracts/ (inside a service) would be published or consumed uncatalogued.
    strays = [
        e.__module__
        for e in _every_event_class()
        if e.__module__.startswith("gatherly.") and not e.__module__.startswith("gatherly.contracts.")
    ]
    assert not strays, f"integration events must live in contracts/: {strays}"
    for service in ALL.values():
        for topic in service.topics:
            assert topic in catalog["channels"], f"{service.name} publishes to {topic}, not in the catalog"
            assert f"{service.name}_publishes_{topic}" in catalog["operations"]
        for group, spec in service.consumers.specs.items():
            for event_type in spec.handlers:
                assert any(m["name"] == event_type for m in messages.values()), f"{group} consumes {event_type}"
            for topic in spec.topics:
                assert f"{group}_consumes_{topic}" in catalog["operations"]


def _every_event_class() -> list[type[IntegrationEvent]]:
    found: list[type[IntegrationEvent]] = []
    pending = list(IntegrationEvent.__subclasses__())
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return [cls for cls in found if "TYPE" in cls.__dict__]


def test_the_catalog_is_an_asyncapi_3_document_with_schemas_and_keys() -> None:
    catalog = catalog_document()
    assert catalog["asyncapi"] == "3.0.0"
    created = catalog["components"]["messages"]["group.created.v1"]
    assert created["payload"] == {"$ref": "#/components/schemas/GroupCreated"}
    assert created["x-key"] == "group_id" and created["bindings"]["kafka"]["key"]["type"] == "string"
    assert "name" in catalog["components"]["schemas"]["GroupCreated"]["properties"]
    receive = catalog["operations"]["groups.profiles_consumes_user"]
    assert receive["action"] == "receive" and receive["x-service"] == "groups"
    # Every $ref points at something that exists.
    text = as_text(catalog)
    for ref in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node: Any = catalog
        for part in ref.split("/"):
            node = node[part]
