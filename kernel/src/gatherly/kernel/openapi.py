"""A service's OpenAPI document told truthfully, once for every service: one Problem schema (RFC 9457) under
application/problem+json for every error status an operation can return, stable operationIds
(`<service>_<route function>`), one tag per service, and the bearer scheme on the operations that read a token.

The statuses added here are those the kernel itself causes (validation, limits, authentication, unexpected
errors); a route names the ones its domain raises with `responses=problems(404, 409)`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from gatherly.kernel.auth import optional_principal, require_principal, require_principal_even_if_deleted
from gatherly.kernel.limits import PROBLEM_JSON
from gatherly.kernel.routes import FastRoute, takes_json

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "title": "Problem",
        "description": "An error (RFC 9457). Validation errors (422) list the fields at fault in `errors`.",
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "description": "A URI naming the kind of problem; about:blank for most."},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "request_id": {
                "type": "string",
                "description": "On a 5xx: quote it when reporting the problem (always in X-Request-ID).",
            },
            "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ProblemField"}},
        },
        "additionalProperties": True,
    },
    "ProblemField": {
        "title": "ProblemField",
        "type": "object",
        "required": ["field", "message"],
        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
    },
}

BEARER_SCHEME = {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}

# What the kernel answers for, on every operation or on those with a body or a token.
EVERY_OPERATION = (414, 431, 500)
WITH_INPUT = (422,)
WITH_BODY = (413,)
WITH_JSON_BODY = (415,)  # a body sent as another type (kernel/routes.py `refuse_other_media`)
WITH_TOKEN = (401, 503)  # 503: the keys that verify tokens cannot be fetched right now

DESCRIPTIONS = {
    401: "No valid access token",
    413: "Request body over the route's limit",
    414: "Path or query string too long",
    415: "The body is not sent as JSON: `Accept` names the type taken (application/json)",
    422: "Invalid input: the fields at fault are in `errors`",
    431: "Request headers too large",
    500: "Unexpected error, logged under the request id in the answer",
    503: "A dependency cannot be reached right now; try again after Retry-After",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: the error statuses its domain can answer with (documented as Problem)."""
    return {status: {"description": HTTPStatus(status).phrase} for status in statuses}


def install_openapi(app: FastAPI, service: str) -> None:
    """Make `app.openapi()` return the truthful document of `service` (built once, then cached by FastAPI)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            truthful(build(), app, service)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def truthful(document: dict[str, Any], app: FastAPI, service: str) -> None:
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for generic in ("HTTPValidationError", "ValidationError"):
        schemas.pop(generic, None)
    schemas.update(PROBLEM_SCHEMAS)
    uses_tokens = False
    # Routes of included routers are reached through their contexts (the prefix applied).
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        token = _token_use(route.original_route.dependant)
        for method in route.methods or ():
            operation = document["paths"][route.path_format][method.lower()]
            operation["operationId"] = f"{service}_{route.name}"
            operation["tags"] = [service]
            statuses = [*EVERY_OPERATION]
            if operation.get("parameters") or "requestBody" in operation:
                statuses += WITH_INPUT
            if "requestBody" in operation:
                statuses += WITH_BODY
            if isinstance(route.original_route, FastRoute) and takes_json(route.original_route):
                statuses += WITH_JSON_BODY
            if token is not None:
                uses_tokens = True
                statuses += WITH_TOKEN
                operation["security"] = [{"bearer": []}] if token == "required" else [{}, {"bearer": []}]
            responses = operation.setdefault("responses", {})
            for status in statuses:
                responses.setdefault(str(status), {"description": DESCRIPTIONS[status]})
            for status, response in responses.items():
                if status.isdigit() and int(status) >= 400:
                    if response.get("description") in ("Validation Error", None, ""):
                        response["description"] = DESCRIPTIONS.get(int(status), HTTPStatus(int(status)).phrase)
                    response["content"] = {PROBLEM_JSON: {"schema": PROBLEM_REF}}
    if uses_tokens:
        components.setdefault("securitySchemes", {}).update(BEARER_SCHEME)
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"operationIds must be unique in {service}: {sorted(duplicates)}")


TOKEN_DEPENDENCIES: dict[Callable[..., Any], str] = {
    require_principal: "required",
    require_principal_even_if_deleted: "required",
    optional_principal: "optional",
}


def _token_use(dependant: Dependant) -> str | None:
    uses = {TOKEN_DEPENDENCIES[d.call] for d in _all(dependant) if d.call is not None and d.call in TOKEN_DEPENDENCIES}
    return "required" if "required" in uses else (uses.pop() if uses else None)


def _all(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _all(sub)
