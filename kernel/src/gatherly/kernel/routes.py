"""The route class of every service: FastAPI's request handling, with a route's dependencies solved by a plan made
once when the route is built.

FastAPI (0.165) solves a route's dependencies anew on every request: for each node of the tree it classifies the
callable again (generator? coroutine? a security scheme? which scopes?), builds its cache key, looks at the path,
query, header and cookie parameters and makes a result object: ~10-15 µs a node whatever the dependency does, and a
read such as `GET /api/users/me` has five. `FastRoute` decides all of that when the route is built, and so what
FastAPI's `request_params_to_args` and `request_body_to_args` work out per parameter (aliases, sequence or not,
default); per request it only calls the dependencies in FastAPI's order, reads the parameters and runs each
field's own validation, and serializes the answer as FastAPI's `serialize_response` does (an exact instance of the
response model is not validated again where that validation would give it back as it is: `_as_is`). The answers
are the same: the same values reach the endpoint, a dependency is called once per request (FastAPI's cache), a
parameter's errors are the same list in the same order (so the same 422 problem), an exception from a dependency
or the endpoint leaves the same way, and the response is made as FastAPI makes it (`kernel/tests/test_routes.py`
compares the two handlers).

The body of a route with a JSON body field is read as FastAPI's handler reads it (the same content-type rules, the
same errors for JSON that does not parse or a body that cannot be read) and validated as FastAPI's
`request_body_to_args` does. Only routes whose every feature the plan knows take it: async dependencies and
endpoint, no `yield` dependency, no form body, no security scopes, no `Response`, `BackgroundTasks` or
`SecurityScopes` parameter, no streaming response. Any other route, and every request while FastAPI's own
telemetry is on or dependency overrides are set, is handled by FastAPI's handler, unchanged.

One difference on every route of this class that takes JSON strictly (FastAPI's default; every route of ours), on
either handler: a body its Content-Type does not call JSON (text/plain, application/xml, none at all) is a 415
saying what is taken (`Accept: application/json`, RFC 9110 §15.5.16), not the 422 of FastAPI's validation of the
raw bytes.
"""

from __future__ import annotations

import email.message
import functools
import inspect
import json
from collections.abc import Callable, Coroutine, Mapping
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

from fastapi import params
from fastapi._body_limit import get_body_limit_error
from fastapi._compat import ModelField, field_annotation_is_sequence, get_missing_field_error
from fastapi.datastructures import DefaultPlaceholder
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import (
    _get_param_aliases,
    _get_param_model,
    _is_json_field,
    _should_embed_body_fields,
    request_params_to_args,
)
from fastapi.exceptions import EndpointContext, RequestValidationError
from fastapi.routing import APIRoute, _effective_route_context_var, _extract_endpoint_context, serialize_response
from fastapi.sse import EventSourceResponse
from fastapi.telemetry import get_telemetry_data
from fastapi.utils import is_body_allowed_for_status_code
from pydantic_core import PydanticUndefined
from starlette.datastructures import Headers, ImmutableMultiDict
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
    given_request: tuple[str, ...] | None  # a plan that only hands the request over: its parameters' names


@dataclass(frozen=True, slots=True)
class _Plan:
    """What FastAPI's `solve_dependencies` does for one node of the tree, decided once."""

    steps: tuple[_Step, ...]
    params: tuple[_Params, ...]  # the node's path, query, header and cookie parameters, in FastAPI's order
    body: _Body | None
    request_names: tuple[str, ...]  # the parameters given the request itself (`Request`, `HTTPConnection`)

    async def solve(self, request: Request, body: Any, cache: dict[Any, Any]) -> tuple[dict[str, Any], list[Any]]:
        """The node's values and errors, as `solve_dependencies` makes them (same order, same cache)."""
        values: dict[str, Any] = {}
        errors: list[Any] = []
        for step in self.steps:
            if step.given_request is not None:  # most dependencies (`service_context`, the caller's token)
                sub_values = dict.fromkeys(step.given_request, request)
            else:
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
        for params_in in self.params:
            params_in.read(request, values, errors)
        if self.body is not None:
            self.body.read(body, values, errors)
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
        given_request = plan.request_names if not (plan.steps or plan.params or plan.body) else None
        steps.append(_Step(plan, call, sub.name, sub.use_cache, (call, (), sub.scope or ""), given_request))
    params_in = tuple(
        _params_in(fields, received)
        for fields, received in (
            (dependant.path_params, _path_params),
            (dependant.query_params, _query_params),
            (dependant.header_params, _headers),
            (dependant.cookie_params, _cookies),
        )
        if fields
    )
    body = _body_of(dependant.body_params, embed_body_fields) if dependant.body_params else None
    request_names = tuple(
        name for name in (dependant.http_connection_param_name, dependant.request_param_name) if name is not None
    )
    return _Plan(tuple(steps), params_in, body, request_names)


@dataclass(frozen=True, slots=True)
class _Field:
    """A parameter or body field with what FastAPI works out from it on every request (its aliases, whether its
    annotation is a sequence, its default) worked out once; its validation is FastAPI's (`ModelField.validate`)."""

    field: ModelField
    name: str
    keys: tuple[tuple[str, tuple[str, ...]], ...]  # each name it is sent under and the errors' `loc`, preferred first
    every_value: bool  # a sequence (not `Json`): all the values of a repeated query key or header
    sequence: bool  # a sequence annotation: an empty value is a missing one
    required: bool
    default: Any  # the default when it is the same object on every request (deepcopy gives it back)
    copy_default: bool  # otherwise FastAPI's deepcopy of the field's default, per request
    validate_default: bool

    def validate(self, value: Any, loc: tuple[str, ...]) -> tuple[Any, list[Any]]:
        """FastAPI's `_validate_value_with_model_field`: missing, default or validated."""
        if value is PydanticUndefined:
            if self.required:
                return None, [get_missing_field_error(loc=loc)]
            value = deepcopy(self.field.default) if self.copy_default else self.default
            if not self.validate_default:
                return value, []
        return self.field.validate(value, {}, loc=loc)


def _field_of(field: ModelField, keys: tuple[tuple[str, tuple[str, ...]], ...]) -> _Field:
    sequence = field_annotation_is_sequence(field.field_info.annotation)
    required = field.field_info.is_required()
    default, copy_default = None, False
    if field.field_info.default_factory is not None:
        copy_default = True  # the factory is called on every request (and not here: it may count its calls)
    elif not required:
        default = field.default
        copy_default = deepcopy(default) is not default
    return _Field(
        field=field,
        name=field.name,
        keys=keys,
        every_value=sequence and not _is_json_field(field),
        sequence=sequence,
        required=required,
        default=None if copy_default else default,
        copy_default=copy_default,
        validate_default=bool(field.field_info.validate_default),
    )


def _path_params(request: Request) -> Mapping[str, Any]:
    return request.path_params


def _query_params(request: Request) -> Mapping[str, Any]:
    return request.query_params


def _headers(request: Request) -> Mapping[str, Any]:
    return request.headers


def _cookies(request: Request) -> Mapping[str, Any]:
    return request.cookies


@dataclass(frozen=True, slots=True)
class _Params:
    """A node's parameters of one kind (path, query, header or cookie): FastAPI's `request_params_to_args` with
    what it decides per field planned. A parameter model (a `Query()` model) is left to FastAPI's function."""

    fields: list[ModelField]
    received: Callable[[Request], Mapping[str, Any]]
    planned: tuple[_Field, ...] | None

    def read(self, request: Request, values: dict[str, Any], errors: list[Any]) -> None:
        received = self.received(request)
        if self.planned is None:
            param_values, param_errors = request_params_to_args(self.fields, received)
            values.update(param_values)
            errors += param_errors
            return
        several = isinstance(received, ImmutableMultiDict | Headers)  # query parameters and headers repeat
        for param in self.planned:
            keys = param.keys
            key, loc = keys[0] if len(keys) == 1 else next((pair for pair in keys if pair[0] in received), keys[0])
            # Most of a list's parameters are absent from a request: asked first with `in`, they are not looked up
            # (`Mapping.get` raises and catches a KeyError for each: ~1 µs, eleven on the events list).
            if key not in received:
                value = None
            elif several and param.every_value:
                value = received.getlist(key)  # type: ignore[attr-defined]
            else:
                value = received[key]
            if value is None or (param.sequence and len(value) == 0):
                value = PydanticUndefined  # the default applies
            solved, param_errors = param.validate(value, loc)
            if param_errors:
                errors.extend(param_errors)
            else:
                values[param.name] = solved


def _params_in(fields: list[ModelField], received: Callable[[Request], Mapping[str, Any]]) -> _Params:
    if any(_get_param_model(field) is not None for field in fields):
        return _Params(fields, received, None)
    planned = []
    for field in fields:
        field_info = field.field_info
        assert isinstance(field_info, params.Param)
        keys = tuple((key, (field_info.in_.value, key)) for _, key in _get_param_aliases(field))
        planned.append(_field_of(field, keys))
    return _Params(fields, received, tuple(planned))


@dataclass(frozen=True, slots=True)
class _Body:
    """FastAPI's `request_body_to_args` for a JSON body (the plan takes no form), its decisions made once."""

    single: _Field | None  # the whole body is this field's value
    embedded: tuple[_Field, ...]  # else each field is the body's key of its name (or one of its aliases)

    def read(self, body: Any, values: dict[str, Any], errors: list[Any]) -> None:
        if self.single is not None:
            solved, body_errors = self.single.validate(body, ("body",))
            values[self.single.name] = solved
            errors.extend(body_errors)
            return
        for field in self.embedded:
            loc = field.keys[0][1]
            value = PydanticUndefined
            if body is not PydanticUndefined and not isinstance(body, bytes):
                try:
                    for key, key_loc in field.keys:
                        value = body.get(key, PydanticUndefined)
                        if value is not PydanticUndefined:
                            loc = key_loc
                            break
                except AttributeError:  # embedded fields need an object, not a list, a scalar or null
                    errors.append(get_missing_field_error(loc))
                    continue
            solved, field_errors = field.validate(value, loc)
            if field_errors:
                errors.extend(field_errors)
            else:
                values[field.name] = solved


def _body_of(fields: list[ModelField], embed_body_fields: bool) -> _Body:
    if len(fields) == 1 and not embed_body_fields and not _should_embed_body_fields(fields):
        return _Body(_field_of(fields[0], ()), ())
    embedded = tuple(
        _field_of(field, tuple((alias, ("body", alias)) for alias, _ in _get_param_aliases(field))) for field in fields
    )
    return _Body(None, embedded)


def _plain_coroutine_function(call: Any) -> bool:
    """A coroutine function (or a partial or decorated one) that FastAPI would await, not run as a generator."""
    unwrapped = inspect.unwrap(call)
    return (
        inspect.iscoroutinefunction(call)
        and not inspect.isasyncgenfunction(unwrapped)
        and not inspect.isgeneratorfunction(unwrapped)
    )


# What a JSON body must be sent as, said to a client that sent another type.
JSON_MEDIA_TYPE = "application/json"


@functools.lru_cache(maxsize=64)
def is_json_media_type(content_type: str) -> bool:
    """Whether FastAPI parses a body of this Content-Type as JSON, decided as its handler does (fastapi/routing.py):
    by the email package's media type parser, which forgives more than a plain comparison would
    (`application/json\xa0` is JSON to it). Kept per header value: the parse cost ~3-5 µs and a JSON write asked it
    twice (the text policy, then the body's reading), where clients send a handful of distinct values; bounded, so
    values made up by a client only push each other out."""
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def _sent_as_json(content_type: str | None) -> bool:
    """Whether a body sent with this Content-Type (None: with none) is JSON to FastAPI's handler."""
    return content_type is not None and is_json_media_type(content_type)


def refuse_other_media(content_type: str | None) -> None:
    """The 415 of a body sent with a Content-Type that is not JSON, or none, to a route that takes JSON."""
    if not _sent_as_json(content_type):
        raise HTTPException(
            415,
            f"The body must be JSON, sent with Content-Type: {JSON_MEDIA_TYPE}.",
            headers={"Accept": JSON_MEDIA_TYPE},
        )


def takes_json(route: Any) -> bool:
    """Whether the route reads its body as JSON with FastAPI's strict content type (every route of ours does)."""
    field_info = getattr(route.body_field, "field_info", None)
    strict_content_type = _setting(route.strict_content_type)
    return field_info is not None and not isinstance(field_info, params.Form) and bool(strict_content_type)


def _setting(value: Any) -> Any:
    """A route's setting as FastAPI's handler takes it: the value given, or the default it stands in for."""
    return value.value if isinstance(value, DefaultPlaceholder) else value


def _refusing_other_media(standard: Handler) -> Handler:
    """FastAPI's handler, after `refuse_other_media` for a request with a body that is not JSON."""

    async def handle(request: Request) -> Response:
        content_type = request.headers.get("content-type")
        if not _sent_as_json(content_type):
            try:
                body = await request.body()  # read once: FastAPI's handler takes it from the request again
            except Exception:
                return await standard(request)  # one that cannot be read: as FastAPI's handler answers it
            if body:
                refuse_other_media(content_type)
        return await standard(request)

    return handle


class FastRoute(APIRoute):
    """An `APIRoute` whose dependencies are solved by a plan made once (see the module's docstring)."""

    def get_route_handler(self) -> Handler:
        standard = super().get_route_handler()
        if takes_json(self._effective()):
            standard = _refusing_other_media(standard)
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
    actual = _setting(route.response_class)
    if isinstance(actual, type) and issubclass(actual, EventSourceResponse):
        return None
    return _plan_of(route.dependant, route._embed_body_fields)


def _planned(route: Any, plan: _Plan, standard: Handler) -> Handler:
    """A request handler doing what FastAPI's `get_request_handler` does for the routes the plan knows."""
    dependant: Dependant = route.dependant
    endpoint = dependant.call
    assert endpoint is not None
    response_field = route.response_field
    response_class = route.response_class
    actual_response_class: type[Response] = _setting(response_class)
    # FastAPI's fast path: no custom response class and a response model, serialized straight to JSON bytes.
    dump_json = response_field is not None and isinstance(response_class, DefaultPlaceholder)
    status_code: dict[str, Any] = {"status_code": route.status_code} if route.status_code else {}
    overrides = route.dependency_overrides_provider
    body_field = route.body_field
    strict_content_type: bool = _setting(route.strict_content_type)
    context: EndpointContext = _extract_endpoint_context(endpoint)
    # The route's response_model_* options, as both serializations below take them.
    shaping: dict[str, Any] = {
        "include": route.response_model_include,
        "exclude": route.response_model_exclude,
        "by_alias": route.response_model_by_alias,
        "exclude_unset": route.response_model_exclude_unset,
        "exclude_defaults": route.response_model_exclude_defaults,
        "exclude_none": route.response_model_exclude_none,
    }
    returned_as_is = _as_is(response_field)

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
        if type(answer) is returned_as_is:
            # What FastAPI's re-validation of it would give back: the same instance, untouched (see `_as_is`).
            assert response_field is not None
            serialize = response_field.serialize_json if dump_json else response_field.serialize
            content = serialize(answer, **shaping)
        else:
            content = await serialize_response(
                field=response_field,
                response_content=answer,
                **shaping,
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


def _as_is(response_field: ModelField | None) -> type | None:
    """The response model whose exact instances (not a subclass's) FastAPI's re-validation in `serialize_response`
    gives back as they are: a model validator that does not revalidate instances and has no validator around it
    (an `after` model validator would run again; `revalidate_instances` would rebuild the instance). None: every
    answer is validated as FastAPI does."""
    if response_field is None:
        return None
    schema: Any = response_field._type_adapter.core_schema
    if schema["type"] == "definitions":  # a model with nested models: their definitions beside it
        definitions, schema = schema["definitions"], schema["schema"]
        if schema["type"] == "definition-ref":
            schema = next((each for each in definitions if each.get("ref") == schema["schema_ref"]), {"type": None})
    model: type | None = schema.get("cls") if schema["type"] == "model" else None
    revalidate = schema.get("revalidate_instances") or schema.get("config", {}).get("revalidate_instances")
    plain = model is response_field.field_info.annotation and revalidate in (None, "never")
    return model if plain else None


async def _json_body(request: Request, strict_content_type: bool, where: EndpointContext) -> Any:
    """The request's body as FastAPI's handler reads it for a JSON body field: the parsed JSON when the content type
    says JSON (or is absent on a route that is not strict), with FastAPI's errors for JSON that does not parse and a
    body that cannot be read. Another content type (or none) is `refuse_other_media`'s 415 on a strict route, as
    `_refusing_other_media` answers before FastAPI's handler; on one that is not strict, the raw bytes, which FastAPI
    validates as they are."""
    try:
        body_bytes = await request.body()
        if not body_bytes:
            return PydanticUndefined
        content_type = request.headers.get("content-type")
        if _sent_as_json(content_type):
            return await request.json()
        if strict_content_type:
            refuse_other_media(content_type)
        return body_bytes if content_type else await request.json()
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
