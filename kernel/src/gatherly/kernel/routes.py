"""The route class of every service: FastAPI's request handling, with a route's dependencies solved by a plan made
once when the route is built.

FastAPI (0.165) solves a route's dependencies anew on every request: for each node of the tree it classifies the
callable again (generator? coroutine? a security scheme? which scopes?), builds its cache key, looks at the path,
query, header and cookie parameters and makes a result object: ~10-15 µs a node whatever the dependency does, and a
read such as `GET /api/users/me` has five. `FastRoute` decides all of that when the route is built and, per request,
only calls the dependencies in FastAPI's order, validates the parameters with FastAPI's own functions and serializes
the answer with FastAPI's `serialize_response`. The answers are the same: the same values reach the endpoint, a
dependency is called once per request (FastAPI's cache), a parameter's errors are the same list in the same order
(so the same 422 problem), an exception from a dependency or the endpoint leaves the same way, and the response is
made as FastAPI makes it (`kernel/tests/test_routes.py` compares the two handlers).

The body of a route with a JSON body field is read as FastAPI's handler reads it (the same content-type rules, the
same errors for JSON that does not parse or a body that cannot be read) and validated by FastAPI's
`request_body_to_args`. Only routes whose every feature the plan knows take it: async dependencies and endpoint, no
`yield` dependency, no form body, no security scopes, no `Response`, `BackgroundTasks` or `SecurityScopes`
parameter, no streaming response. Any other route, and every request while FastAPI's own telemetry is on or
dependency overrides are set, is handled by FastAPI's handler, unchanged.
"""

from __future__ import annotations

import email.message
import inspect
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import params
from fastapi._body_limit import get_body_limit_error
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import request_body_to_args, request_params_to_args
from fastapi.exceptions import EndpointContext, RequestValidationError
from fastapi.routing import APIRoute, _effective_route_context_var, _extract_endpoint_context, serialize_response
from fastapi.sse import EventSourceResponse
from fastapi.telemetry import get_telemetry_data
from fastapi.utils import is_body_allowed_for_status_code
from pydantic_core import PydanticUndefined
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


@dataclass(frozen=True, slots=True)
class _Step:
    """One dependency of a node: its own plan (its sub-dependencies and parameters), then its call."""

    plan: _Plan
    call: Callable[..., Coroutine[Any, Any, Any]]
    name: str | None
    use_cache: bool
    cache_key: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What FastAPI's `solve_dependencies` does for one node of the tree, decided once."""

    steps: tuple[_Step, ...]
    dependant: Dependant
    has_params: bool
    embed_body_fields: bool
    request_names: tuple[str, ...]  # the parameters given the request itself (`Request`, `HTTPConnection`)

    async def solve(self, request: Request, body: Any, cache: dict[Any, Any]) -> tuple[dict[str, Any], list[Any]]:
        """The node's values and errors, as `solve_dependencies` makes them (same order, same cache)."""
        values: dict[str, Any] = {}
        errors: list[Any] = []
        for step in self.steps:
            # As FastAPI: the sub-tree is solved even when this dependency's value is cached already.
            sub_values, sub_errors = await step.plan.solve(request, body, cache)
            if sub_errors:
                errors.extend(sub_errors)
                continue
            if step.use_cache and step.cache_key in cache:
                solved = cache[step.cache_key]
            else:
                solved = await step.call(**sub_values)
            if step.name is not None:
                values[step.name] = solved
            if step.cache_key not in cache:
                cache[step.cache_key] = solved
        if self.has_params:
            dependant = self.dependant
            for fields, received in (
                (dependant.path_params, request.path_params),
                (dependant.query_params, request.query_params),
                (dependant.header_params, request.headers),
                (dependant.cookie_params, request.cookies),
            ):
                if fields:
                    param_values, param_errors = request_params_to_args(fields, received)
                    values.update(param_values)
                    errors += param_errors
        if self.dependant.body_params:
            body_values, body_errors = await request_body_to_args(
                body_fields=self.dependant.body_params, received_body=body, embed_body_fields=self.embed_body_fields
            )
            values.update(body_values)
            errors.extend(body_errors)
        for name in self.request_names:
            values[name] = request
        return values, errors


def _plan_of(dependant: Dependant, embed_body_fields: bool) -> _Plan | None:
    """The plan of a node, or None when it uses something the plan does not do (FastAPI's handler then)."""
    if (
        dependant.websocket_param_name
        or dependant.background_tasks_param_name
        or dependant.response_param_name
        or dependant.security_scopes_param_name
        or dependant.own_oauth_scopes
        or dependant.parent_oauth_scopes
        or dependant.concurrency is not None
    ):
        return None
    steps: list[_Step] = []
    for sub in dependant.dependencies:
        call = sub.call
        if call is None or not _plain_coroutine_function(call):
            return None
        plan = _plan_of(sub, embed_body_fields)
        if plan is None:
            return None
        # FastAPI's cache key of a dependency without security scopes that is not a generator.
        steps.append(_Step(plan, call, sub.name, sub.use_cache, (call, (), sub.scope or "")))
    has_params = bool(
        dependant.path_params or dependant.query_params or dependant.header_params or dependant.cookie_params
    )
    request_names = tuple(
        name for name in (dependant.http_connection_param_name, dependant.request_param_name) if name is not None
    )
    return _Plan(tuple(steps), dependant, has_params, embed_body_fields, request_names)


def _plain_coroutine_function(call: Any) -> bool:
    """A coroutine function (or a partial or decorated one) that FastAPI would await, not run as a generator."""
    unwrapped = inspect.unwrap(call)
    return (
        inspect.iscoroutinefunction(call)
        and not inspect.isasyncgenfunction(unwrapped)
        and not inspect.isgeneratorfunction(unwrapped)
    )


class FastRoute(APIRoute):
    """An `APIRoute` whose dependencies are solved by a plan made once (see the module's docstring)."""

    def get_route_handler(self) -> Handler:
        standard = super().get_route_handler()
        plan = self._plan()
        if plan is None:
            return standard
        return _planned(self._effective(), plan, standard)

    def _effective(self) -> Any:
        """What FastAPI builds this route's handler from: the route, or (while FastAPI includes it into another
        router) the route as that inclusion sees it (the router's prefix, dependencies, response class)."""
        effective = _effective_route_context_var.get()
        return effective if effective is not None and effective.original_route is self else self

    def _plan(self) -> _Plan | None:
        """The plan this route's requests are solved by (None: FastAPI's handler)."""
        return _route_plan(self._effective())


def _route_plan(route: Any) -> _Plan | None:
    if (
        isinstance(getattr(route.body_field, "field_info", None), params.Form)
        or route.stream_item_field is not None
        or route.is_json_stream
        or not _plain_coroutine_function(route.dependant.call)
    ):
        return None
    response_class = route.response_class
    actual = response_class.value if isinstance(response_class, DefaultPlaceholder) else response_class
    if isinstance(actual, type) and issubclass(actual, EventSourceResponse):
        return None
    return _plan_of(route.dependant, route._embed_body_fields)


def _planned(route: Any, plan: _Plan, standard: Handler) -> Handler:
    """A request handler doing what FastAPI's `get_request_handler` does for a route without a body."""
    dependant: Dependant = route.dependant
    endpoint = dependant.call
    assert endpoint is not None
    response_field = route.response_field
    response_class = route.response_class
    actual_response_class: type[Response] = (
        response_class.value if isinstance(response_class, DefaultPlaceholder) else response_class
    )
    # FastAPI's fast path: no custom response class and a response model, serialized straight to JSON bytes.
    dump_json = response_field is not None and isinstance(response_class, DefaultPlaceholder)
    status_code: dict[str, Any] = {"status_code": route.status_code} if route.status_code else {}
    overrides = route.dependency_overrides_provider
    body_field = route.body_field
    strict = route.strict_content_type
    strict_content_type: bool = strict.value if isinstance(strict, DefaultPlaceholder) else strict
    context: EndpointContext = _extract_endpoint_context(endpoint)
    include, exclude = route.response_model_include, route.response_model_exclude
    by_alias, exclude_unset = route.response_model_by_alias, route.response_model_exclude_unset
    exclude_defaults, exclude_none = route.response_model_exclude_defaults, route.response_model_exclude_none

    async def handle(request: Request) -> Response:
        if (overrides is not None and overrides.dependency_overrides) or get_telemetry_data() is not None:
            return await standard(request)
        where = context
        if dependant.path:  # what FastAPI's errors say of where they arose
            mount_path = request.scope.get("root_path", "").rstrip("/")
            where = {**context, "path": f"{request.method} {mount_path}{dependant.path}"}
        body = PydanticUndefined if body_field is None else await _json_body(request, strict_content_type, where)
        values, errors = await plan.solve(request, body, {})
        if errors:
            raise RequestValidationError(errors, body=None if body is PydanticUndefined else body, endpoint_ctx=where)
        answer = await endpoint(**values)
        if isinstance(answer, Response):
            return answer
        content = await serialize_response(
            field=response_field,
            response_content=answer,
            include=include,
            exclude=exclude,
            by_alias=by_alias,
            exclude_unset=exclude_unset,
            exclude_defaults=exclude_defaults,
            exclude_none=exclude_none,
            is_coroutine=True,
            endpoint_ctx=where,
            dump_json=dump_json,
        )
        if dump_json:
            response = Response(content=content, media_type="application/json", background=None, **status_code)
        else:
            response = actual_response_class(content, background=None, **status_code)
        if not is_body_allowed_for_status_code(response.status_code):
            response.body = b""
        return response

    return handle


async def _json_body(request: Request, strict_content_type: bool, where: EndpointContext) -> Any:
    """The request's body as FastAPI's handler reads it for a JSON body field: the parsed JSON when the content type
    says JSON (or is absent and not required), else the raw bytes (for the field's validation to refuse), with
    FastAPI's errors for JSON that does not parse and a body that cannot be read."""
    try:
        body_bytes = await request.body()
        if not body_bytes:
            return PydanticUndefined
        content_type = request.headers.get("content-type")
        if not content_type:
            return body_bytes if strict_content_type else await request.json()
        message = email.message.Message()
        message["content-type"] = content_type
        if message.get_content_maintype() == "application":
            subtype = message.get_content_subtype()
            if subtype == "json" or subtype.endswith("+json"):
                return await request.json()
        return body_bytes
    except json.JSONDecodeError as error:
        refusal = {"type": "json_invalid", "loc": ("body", error.pos), "msg": "JSON decode error", "input": {}}
        raise RequestValidationError(
            [{**refusal, "ctx": {"error": error.msg}}], body=error.doc, endpoint_ctx=where
        ) from error
    except HTTPException:
        raise
    except Exception as error:
        if MAX_BODY_SIZE_SCOPE_KEY in request.scope and (limit := get_body_limit_error(error)):
            raise limit from error
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from error
