"""FastRoute answers exactly as FastAPI's own route handler does: the same request to the same endpoints, served
once by `APIRoute` and once by `FastRoute`, gets the same status, headers and body, errors included."""

from __future__ import annotations

import itertools
from enum import Enum
from typing import Annotated, Any, Literal

import httpx
import pytest
import structlog
from fastapi import APIRouter, Body, Cookie, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, Json, model_validator
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from gatherly.kernel.errors import NotFound, Unauthorized
from gatherly.kernel.routes import FastRoute, _as_is, is_json_media_type
from gatherly.kernel.web import PageRequest, install_error_handlers, page_request, statuses_from


class ItemOut(BaseModel):
    id: int
    caller: str | None
    limit: int
    cursor: dict[str, Any] | None
    calls: dict[str, int]
    note: str | None = None


class NoteIn(BaseModel):
    text: str = Field(min_length=1, max_length=10)
    stars: int = Field(default=0, ge=0, le=5)


class Colour(Enum):
    RED = "red"
    BLUE = "blue"


class Filters(BaseModel):
    """A parameter model: FastAPI's own `request_params_to_args` reads it (the plan does not)."""

    kind: str = "any"
    ids: list[int] = []


class Plain(BaseModel):
    id: int
    name: str = Field(default="plain", serialization_alias="the-name")
    hidden: str | None = None
    nested: NoteIn | None = None


class Subclass(Plain):
    extra: str = "extra"


class AfterValidated(BaseModel):
    """FastAPI's re-validation of the returned instance runs the `after` validator again."""

    count: int

    @model_validator(mode="after")
    def counted(self) -> AfterValidated:
        self.count += 1
        return self


class Revalidated(BaseModel):
    model_config = ConfigDict(revalidate_instances="always")
    id: int = Field(ge=0)


async def optional_caller(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    if header != "Bearer good":
        raise Unauthorized("The access token is not valid.")
    return "ann"


async def required_caller(caller: Annotated[str | None, Depends(optional_caller)]) -> str:
    if caller is None:
        raise Unauthorized("Send an access token.")
    return caller


async def calls(request: Request) -> dict[str, int]:
    """A per-request tally the dependencies below count themselves into."""
    return request.scope.setdefault("calls", {})


async def context(tally: Annotated[dict[str, int], Depends(calls)]) -> str:
    tally["context"] = tally.get("context", 0) + 1
    return "context"


async def uncached(tally: Annotated[dict[str, int], Depends(calls)]) -> str:
    tally["uncached"] = tally.get("uncached", 0) + 1
    return "uncached"


async def store(
    ctx: Annotated[str, Depends(context)], again: Annotated[str, Depends(uncached, use_cache=False)]
) -> str:
    return f"{ctx}+{again}"


async def counted(tally: Annotated[dict[str, int], Depends(calls)], nothing: Annotated[None, Depends(nothing)]) -> str:
    """A dependency of a dependency that takes nothing, and of one that takes only the request."""
    tally["counted"] = tally.get("counted", 0) + 1
    return "counted"


async def nothing() -> None:
    """A dependency without parameters."""


async def strict_flag(flag: Annotated[int, Query(ge=0, le=1)] = 0) -> int:
    return flag


def sync_dependency() -> str:
    return "sync"


def make_app(route_class: type[APIRoute], included: bool = False) -> FastAPI:
    """The routes below; `included`: through `include_router` (FastAPI rebuilds each route's handler for the
    inclusion), otherwise put into the app's own router as kernel/runtime.py does."""
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter(prefix="/items", route_class=route_class)
    serials = itertools.count()  # a default factory whose value changes: called on every request

    @router.get("/{item_id}", response_model=ItemOut)
    async def get_item(
        item_id: Annotated[int, Path(ge=1)],
        caller: Annotated[str | None, Depends(optional_caller)],
        page: Annotated[PageRequest, Depends(page_request)],
        tally: Annotated[dict[str, int], Depends(calls)],
        one: Annotated[str, Depends(store)],
        two: Annotated[str, Depends(context)],
        three: Annotated[str, Depends(uncached, use_cache=False)],
        flag: Annotated[int, Depends(strict_flag)],
        four: Annotated[str, Depends(counted)],
        note: Annotated[str | None, Header(max_length=5)] = None,
        tags: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI copies defaults)
        size: Annotated[int, Query(ge=1)] = 1,
        level: Annotated[int, Query(le=3)] = 0,
    ) -> Any:
        if item_id == 404:
            raise NotFound("No such item.")
        if item_id == 409:
            raise HTTPException(409, "Taken.", headers={"X-Why": "taken"})
        if item_id == 500:
            return {"id": "not a number"}  # the response model refuses it: FastAPI's 500
        cursor = page.cursor
        return {"id": item_id, "caller": caller, "limit": page.limit, "cursor": cursor, "calls": tally, "note": note}

    @router.get("/{item_id}/mine", response_model=ItemOut, response_model_exclude_none=True)
    async def get_mine(
        item_id: int,
        caller: Annotated[str, Depends(required_caller)],
        page: Annotated[PageRequest, Depends(page_request)],
        session: Annotated[str | None, Cookie()] = None,
    ) -> Any:
        return {"id": item_id, "caller": caller, "limit": page.limit, "cursor": None, "calls": {}, "note": session}

    @router.post("", status_code=201, response_model=ItemOut)
    async def create(caller: Annotated[str, Depends(required_caller)]) -> Any:
        return {"id": 1, "caller": caller, "limit": 0, "cursor": None, "calls": {}}

    @router.delete("/{item_id}", status_code=204)
    async def delete(item_id: int, caller: Annotated[str, Depends(required_caller)]) -> None:
        return None

    @router.put("/{item_id}/raw")
    async def raw(item_id: int, request: Request, connection: HTTPConnection) -> Response:
        same = request is connection or request.scope is connection.scope
        return Response(f"{item_id} {request.method} {same}", status_code=202, headers={"X-Raw": "yes"})

    @router.post("/{item_id}/notes", status_code=201)
    async def add_note(
        item_id: int,
        note: NoteIn,
        caller: Annotated[str, Depends(required_caller)],
        flag: Annotated[int, Depends(strict_flag)],
    ) -> dict[str, Any]:
        return {"id": item_id, "note": note.model_dump(), "caller": caller, "flag": flag}

    @router.put("/{item_id}/pair")
    async def pair(item_id: int, left: Annotated[int, Body(ge=0)], right: Annotated[str, Body()]) -> dict[str, Any]:
        return {"id": item_id, "left": left, "right": right}

    @router.get("/{item_id}/sync")
    async def with_sync(item_id: int, value: Annotated[str, Depends(sync_dependency)]) -> dict[str, Any]:
        return {"id": item_id, "value": value}

    @router.get("/{item_id}/search")
    async def search(
        item_id: int,
        q: Annotated[str, Query(min_length=2)],
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        topic: Annotated[list[str], Query()] = [],  # noqa: B006 (FastAPI copies defaults)
        ids: Annotated[list[int] | None, Query()] = None,
        kind: Annotated[str, Query(alias="item-kind")] = "any",
        order: Annotated[str, Query(validation_alias=AliasChoices("order", "sort"))] = "start",
        by: Literal["start", "distance"] = "start",
        colour: Colour | None = None,
        near: Annotated[list[float], Query(), Json()] = [],  # noqa: B006
        checked: Annotated[int, Query(validate_default=True, ge=5)] = "5",  # type: ignore[assignment]
        stamp: Annotated[list[str], Query(default_factory=lambda: ["made"])] = ...,  # type: ignore[assignment]
        serial: int = Query(default_factory=lambda: next(serials)),  # a default, so the closure is seen
        x_token: Annotated[str | None, Header()] = None,
        x_tag: Annotated[list[str] | None, Header()] = None,
        session: Annotated[int | None, Cookie()] = None,
    ) -> dict[str, Any]:
        stamp.append("seen")  # the default factory's list is the request's own
        return {
            "id": item_id,
            "q": q,
            "limit": limit,
            "topic": topic,
            "ids": ids,
            "kind": kind,
            "order": order,
            "by": by,
            "colour": colour,
            "near": near,
            "checked": checked,
            "stamp": stamp,
            "serial": serial,
            "token": x_token,
            "tags": x_tag,
            "session": session,
        }

    @router.get("/{item_id}/filtered")
    async def filtered(
        item_id: int, filters: Annotated[Filters, Query()], page: Annotated[int, Query(ge=1)] = 1
    ) -> dict[str, Any]:
        return {"id": item_id, "filters": filters.model_dump(), "page": page}

    @router.post("/{item_id}/embedded")
    async def embedded(
        item_id: int,
        note: Annotated[NoteIn, Body(embed=True)],
        left: Annotated[int, Body(alias="the-left", ge=0)] = 0,
        tags: Annotated[list[str], Body()] = [],  # noqa: B006
    ) -> dict[str, Any]:
        return {"id": item_id, "note": note.model_dump(), "left": left, "tags": tags}

    @router.get("/{item_id}/answer", response_model=Plain)
    async def answer(item_id: int, shape: str = "plain") -> Any:
        nested = NoteIn(text="n")
        return {
            "plain": Plain(id=item_id, hidden="h", nested=nested),
            "subclass": Subclass(id=item_id, hidden="h"),
            "dict": {"id": item_id, "name": "from a dict"},
            "invalid": Plain.model_construct(id="not a number", name=None),
            "unset": Plain(id=item_id),
        }[shape]

    @router.get(
        "/{item_id}/answer/shaped",
        response_model=Plain,
        response_model_exclude={"hidden"},
        response_model_exclude_unset=True,
        response_model_by_alias=False,
    )
    async def shaped(item_id: int) -> Any:
        return Plain(id=item_id, name="n", hidden="h")  # "name", not its serialization alias

    @router.get("/{item_id}/answer/included", response_model=Plain, response_model_include={"id", "nested"})
    async def included_fields(item_id: int) -> Any:
        return Plain(id=item_id, nested=NoteIn(text="n", stars=2))

    @router.get("/{item_id}/answer/after")
    async def after(item_id: int) -> AfterValidated:
        return AfterValidated(count=item_id)

    @router.get("/{item_id}/answer/revalidated")
    async def revalidated(item_id: int) -> Revalidated:
        made = Revalidated(id=1)
        made.id = -item_id  # assignment is not validated; FastAPI's re-validation refuses it (a 500)
        return made

    if included:
        app.include_router(router)
    else:
        app.router.routes[:0] = router.routes
    return app


JSON = {"content-type": "application/json"}
GOOD = {"authorization": "Bearer good"}
REQUESTS: list[tuple[str, str, dict[str, str], bytes | None]] = [
    ("GET", "/items/7", {}, None),
    ("GET", "/items/7?limit=5&tags=a&tags=b&flag=1", {"authorization": "Bearer good", "note": "hi"}, None),
    ("GET", "/items/7?cursor=eyJhIjoxfQ", {}, None),
    ("GET", "/items/7?cursor=not-a-cursor", {}, None),
    # errors of the path, of sub-dependencies' parameters, of the route's query and header parameters at once
    ("GET", "/items/0?limit=0&flag=2&size=0&level=9", {"note": "far too long"}, None),
    ("GET", "/items/x?limit=abc", {"authorization": "Bearer bad"}, None),  # a parameter's errors, then a 401
    ("GET", "/items/7", {"authorization": "Bearer bad"}, None),
    ("GET", "/items/404", {}, None),
    ("GET", "/items/409", {}, None),
    ("GET", "/items/500", {}, None),
    ("GET", "/items/7/mine", {}, None),
    ("GET", "/items/7/mine", {"authorization": "Bearer good", "cookie": "session=abc"}, None),
    ("GET", "/items/7/mine?limit=101", GOOD, None),
    ("POST", "/items", GOOD, None),
    ("POST", "/items", {}, None),
    ("DELETE", "/items/3", GOOD, None),
    ("DELETE", "/items/3", {"authorization": "Bearer bad"}, None),
    ("PUT", "/items/3/raw", {}, None),
    ("PUT", "/items/x/raw", {}, None),
    ("GET", "/items/3/sync", {}, None),
    ("PATCH", "/items/3", {}, None),
    ("POST", "/items/3/notes", {**GOOD, **JSON}, b'{"text": "hello", "stars": 4}'),
    ("POST", "/items/3/notes?flag=1", {**GOOD, "content-type": "application/vnd.notes+json"}, b'{"text": "hi"}'),
    ("POST", "/items/3/notes", {**GOOD, **JSON}, b'{"text": "", "stars": 9}'),  # two fields refused
    ("POST", "/items/x/notes?flag=7", {**JSON, "authorization": "Bearer bad"}, b'{"stars": "many"}'),
    ("POST", "/items/3/notes", {**GOOD, **JSON}, b'{"text": "hel'),  # JSON that does not parse
    ("POST", "/items/3/notes", {**GOOD, **JSON}, b'{"text": "a", "stars": 1' + b"1" * 5000 + b"}"),  # unreadable
    ("POST", "/items/3/notes", {**GOOD, "content-type": "text/plain"}, b'{"text": "hello"}'),
    ("POST", "/items/3/notes", {**GOOD, "content-type": "application/json; charset=utf-8"}, b'{"text": "ok"}'),
    ("POST", "/items/3/notes", GOOD, b'{"text": "no type"}'),  # no content type: strict, so not JSON
    ("POST", "/items/3/notes", {**GOOD, **JSON}, b""),  # no body
    ("POST", "/items/3/notes", {**GOOD, **JSON}, b"[1, 2]"),
    ("POST", "/items/3/notes", {**JSON}, b'{"text": "hello"}'),  # a valid body, then the token's 401
    ("PUT", "/items/3/pair", JSON, b'{"left": 1, "right": "r"}'),
    ("PUT", "/items/3/pair", JSON, b'{"left": -1}'),
    ("PUT", "/items/3/pair", JSON, b'{"left": 1, "right": "r", "extra": true}'),
    # query, header and cookie parameters planned
    ("GET", "/items/3/search?q=hello", {}, None),
    ("GET", "/items/3/search", {}, None),  # a required parameter missing
    ("GET", "/items/3/search?q=h&limit=abc", {}, None),  # several errors at once, in order
    ("GET", "/items/3/search?q=h&limit=0&by=nearest&colour=green&checked=1&ids=x&ids=1&ids=y", {}, None),
    ("GET", "/items/3/search?q=hey&limit=100&topic=a&topic=b&ids=1&ids=2", {}, None),  # repeated keys
    ("GET", "/items/3/search?q=hey&topic=", {}, None),
    ("GET", "/items/3/search?q=hey&item-kind=k&kind=ignored&sort=distance", {}, None),  # aliases
    ("GET", "/items/3/search?q=hey&order=o&sort=s", {}, None),  # the first alias present wins
    ("GET", "/items/3/search?q=hey&by=distance&colour=blue&checked=6", {}, None),
    ("GET", "/items/3/search?q=hey&near=[1.5,%202]&stamp=s", {}, None),  # a JSON parameter; one value
    ("GET", "/items/3/search?q=hey&near=[1,&stamp=", {}, None),  # JSON that does not parse
    ("GET", "/items/3/search?q=hey&near=", {}, None),
    ("GET", "/items/3/search?q=hey", {"x-token": "t", "x-tag": "a"}, None),
    ("GET", "/items/3/search?q=hey", {"X-Token": "t", "x_token": "u", "cookie": "session=12"}, None),
    ("GET", "/items/3/search?q=hey", {"cookie": "session=twelve"}, None),
    ("GET", "/items/3/search?q=hey&q=second", {}, None),  # a repeated scalar: the last value
    ("GET", "/items/3/search?q=&limit=&ids=&topic=a", {"x-token": "", "x-tag": ""}, None),  # present, empty
    ("GET", "/items/3/search?Q=hey&LIMIT=5", {"X-TAG": "a"}, None),  # query keys are case-sensitive, headers not
    ("GET", "/items/3/filtered", {}, None),  # a parameter model: FastAPI's function
    ("GET", "/items/3/filtered?kind=k&ids=1&ids=2&page=2", {}, None),
    ("GET", "/items/3/filtered?ids=x&page=0", {}, None),
    # bodies: an embedded model beside fields with an alias and a default
    ("POST", "/items/3/embedded", JSON, b'{"note": {"text": "hi"}, "the-left": 2, "tags": ["a"]}'),
    ("POST", "/items/3/embedded", JSON, b'{"note": {"text": ""}, "left": -1, "the-left": -1}'),
    ("POST", "/items/3/embedded", JSON, b'{"text": "hi"}'),  # not embedded as it must be
    ("POST", "/items/3/embedded", JSON, b'"just a string"'),
    ("POST", "/items/3/embedded", JSON, b"null"),
    ("POST", "/items/3/embedded", JSON, b""),
    ("POST", "/items/3/embedded", {"content-type": "text/plain"}, b'{"note": {"text": "hi"}}'),
    # responses: an exact instance of the response model is not validated again; anything else is
    ("GET", "/items/3/answer", {}, None),
    ("GET", "/items/3/answer?shape=subclass", {}, None),
    ("GET", "/items/3/answer?shape=dict", {}, None),
    ("GET", "/items/3/answer?shape=invalid", {}, None),
    ("GET", "/items/3/answer?shape=unset", {}, None),
    ("GET", "/items/3/answer/shaped", {}, None),
    ("GET", "/items/3/answer/included", {}, None),
    ("GET", "/items/3/answer/after", {}, None),
    ("GET", "/items/3/answer/revalidated", {}, None),
]


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")  # the invalid instance returned, in both
@pytest.mark.parametrize("included", [False, True], ids=["own", "included"])
@pytest.mark.parametrize("route_class", [FastRoute, statuses_from({NotFound: 410})], ids=["plain", "statuses"])
async def test_fast_routes_answer_as_fastapis_own_handler(route_class: type[APIRoute], included: bool) -> None:
    fast_app, standard_app = make_app(route_class, included), make_app(_standard_twin(route_class), included)
    # Logs captured rather than rendered: the 500's traceback, rendered twice per case, is slow.
    with structlog.testing.capture_logs():
        async with client(fast_app) as fast, client(standard_app) as standard:
            for method, path, headers, content in REQUESTS:
                expected = await standard.request(method, path, headers=headers, content=content)
                answered = await fast.request(method, path, headers=headers, content=content)
                what = f"{method} {path} {headers}"
                assert answered.status_code == expected.status_code, what
                assert answered.headers.multi_items() == expected.headers.multi_items(), what
                assert answered.content == expected.content, what


def _standard_twin(route_class: type[APIRoute]) -> type[APIRoute]:
    """The same route class over FastAPI's own handler: its `get_route_handler` with FastRoute's plan left out (the
    415 of a body that is not JSON stays: it is FastRoute's on either handler)."""

    class Standard(route_class):  # type: ignore[valid-type, misc]
        def _plan(self) -> None:
            return None

    return Standard


# Bodies a route that takes JSON refuses with a 415: sent as another type, or with none.
NOT_JSON = [
    ("POST", "/items/3/notes", {**GOOD, "content-type": "text/plain"}, b'{"text": "hello"}'),
    ("POST", "/items/3/notes", {**GOOD, "content-type": "application/xml"}, b"<text>hello</text>"),
    ("POST", "/items/3/notes", {**GOOD, "content-type": "application/x-www-form-urlencoded"}, b"text=hello"),
    ("POST", "/items/3/notes", {**GOOD, "content-type": "application/jsonx"}, b'{"text": "hello"}'),
    ("POST", "/items/3/notes", GOOD, b'{"text": "no type"}'),
    ("PUT", "/items/3/pair", {"content-type": "text/plain"}, b'{"left": 1, "right": "r"}'),
    ("POST", "/items/3/embedded", {"content-type": "text/plain"}, b'{"note": {"text": "hi"}}'),
]


@pytest.mark.parametrize("planned", [True, False], ids=["plan", "fastapi"])
async def test_a_body_that_is_not_sent_as_json_is_415_naming_the_type_taken(planned: bool) -> None:
    """HTTP's answer to content of a type the route does not take (RFC 9110 §15.5.16) is 415, with `Accept` naming
    what it takes; FastAPI's is the 422 of validating the raw bytes. Both of FastRoute's handlers answer 415; an
    empty body is still the 422 of a missing one, and JSON's own types (`+json`, parameters) are taken."""
    app = make_app(FastRoute if planned else _standard_twin(FastRoute))
    async with client(app) as api:
        for method, path, headers, content in NOT_JSON:
            answer = await api.request(method, path, headers=headers, content=content)
            assert answer.status_code == 415, (method, path, headers, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.headers["accept"] == "application/json"
            assert answer.json() == {
                "type": "about:blank",
                "title": "Unsupported Media Type",
                "status": 415,
                "detail": "The body must be JSON, sent with Content-Type: application/json.",
            }
        empty = await api.post("/items/3/notes", headers={**GOOD, "content-type": "text/plain"}, content=b"")
        assert empty.status_code == 422
        for taken in ("application/json; charset=utf-8", "application/vnd.notes+json", "APPLICATION/JSON"):
            answer = await api.post("/items/3/notes", headers={**GOOD, "content-type": taken}, content=b'{"text": "a"}')
            assert answer.status_code == 201, (taken, answer.text)


def loose_app(route_class: type[APIRoute], included: bool) -> FastAPI:
    """A route that takes JSON without FastAPI's strict content type: a body with no type is read as JSON, one of
    another type is validated as its raw bytes (no 415: that is only for strict routes)."""
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter(prefix="/loose", route_class=route_class, strict_content_type=False)

    @router.post("/{item_id}/notes", status_code=201)
    async def add_note(item_id: int, note: NoteIn) -> dict[str, Any]:
        return {"id": item_id, "note": note.model_dump()}

    if included:
        app.include_router(router)
    else:
        app.router.routes[:0] = router.routes
    return app


@pytest.mark.parametrize("included", [False, True], ids=["own", "included"])
async def test_a_route_that_is_not_strict_answers_a_body_of_another_type_as_fastapi_does(included: bool) -> None:
    fast_app, standard_app = loose_app(FastRoute, included), loose_app(_standard_twin(FastRoute), included)
    requests = [
        ({"content-type": "text/plain"}, b'{"text": "hello"}'),
        ({"content-type": "application/xml"}, b"<text>hello</text>"),
        ({}, b'{"text": "no type"}'),
        ({}, b'{"text": "hel'),
        ({"content-type": "application/json"}, b'{"text": "typed"}'),
        ({"content-type": "text/plain"}, b""),
    ]
    async with client(fast_app) as fast, client(standard_app) as standard:
        for headers, content in requests:
            expected = await standard.post("/loose/3/notes", headers=headers, content=content)
            answered = await fast.post("/loose/3/notes", headers=headers, content=content)
            assert answered.status_code != 415, (headers, content)
            assert answered.status_code == expected.status_code, (headers, content, answered.text)
            assert answered.headers.multi_items() == expected.headers.multi_items(), (headers, content)
            assert answered.content == expected.content, (headers, content)


def test_the_routes_with_what_the_plan_knows_take_it() -> None:
    """Otherwise the comparison above would compare FastAPI with itself."""
    planned = {
        (route.path, *sorted(route.methods)): route._plan() is not None
        for route in make_app(FastRoute).routes
        if isinstance(route, FastRoute)
    }
    assert planned == {
        ("/items/{item_id}", "GET"): True,
        ("/items/{item_id}/mine", "GET"): True,
        ("/items", "POST"): True,
        ("/items/{item_id}", "DELETE"): True,
        ("/items/{item_id}/raw", "PUT"): True,
        ("/items/{item_id}/notes", "POST"): True,
        ("/items/{item_id}/pair", "PUT"): True,
        ("/items/{item_id}/sync", "GET"): False,  # a sync dependency: FastAPI runs it in a thread
        ("/items/{item_id}/search", "GET"): True,
        ("/items/{item_id}/filtered", "GET"): True,
        ("/items/{item_id}/embedded", "POST"): True,
        ("/items/{item_id}/answer", "GET"): True,
        ("/items/{item_id}/answer/shaped", "GET"): True,
        ("/items/{item_id}/answer/included", "GET"): True,
        ("/items/{item_id}/answer/after", "GET"): True,
        ("/items/{item_id}/answer/revalidated", "GET"): True,
    }


async def test_a_dependency_is_called_once_per_request_unless_it_says_otherwise() -> None:
    async with client(make_app(FastRoute)) as fast:
        answer = await fast.get("/items/7")
    assert answer.json()["calls"] == {"context": 1, "uncached": 2, "counted": 1}


def test_an_answer_skips_validation_only_where_fastapis_gives_the_same_instance_back() -> None:
    as_is = {
        route.path: _as_is(route.response_field) for route in make_app(FastRoute).routes if isinstance(route, FastRoute)
    }
    assert as_is["/items/{item_id}/answer"] is Plain
    assert as_is["/items/{item_id}/answer/after"] is None  # its `after` validator runs again
    assert as_is["/items/{item_id}/answer/revalidated"] is None  # revalidate_instances="always"
    assert as_is["/items/{item_id}/search"] is None  # a dict
    instance = Plain(id=1, nested=NoteIn(text="n"))
    route = next(r for r in make_app(FastRoute).routes if getattr(r, "path", "") == "/items/{item_id}/answer")
    assert isinstance(route, FastRoute) and route.response_field is not None
    assert route.response_field.validate(instance, {}, loc=("response",)) == (instance, [])
    assert route.response_field.validate(instance, {}, loc=("response",))[0] is instance


# What FastAPI's handler (fastapi/routing.py) makes of each Content-Type, by the email package's media type parser:
# JSON for application/json and application/*+json in any case, with parameters, and with a trailing no-break space.
CONTENT_TYPES = {
    "application/json": True,
    "application/json; charset=utf-8": True,
    "Application/JSON ; charset=utf-8": True,
    "application/json\xa0": True,
    "application/problem+json": True,
    "application/vnd.notes+json": True,
    "application/jsonx": False,
    "application/x-www-form-urlencoded": False,
    "text/json": False,
    "text/plain": False,
    "json": False,
    "": False,
    "application/": False,
    "multipart/form-data; boundary=x": False,
}


@pytest.mark.parametrize(("content_type", "is_json"), CONTENT_TYPES.items())
def test_the_json_content_type_decision_is_fastapis_asked_once_or_again(content_type: str, is_json: bool) -> None:
    assert is_json_media_type(content_type) is is_json
    assert is_json_media_type(content_type) is is_json  # the kept answer


def test_the_kept_content_type_decisions_are_bounded() -> None:
    for n in range(500):
        assert is_json_media_type(f"application/x-{n}+json")
    assert is_json_media_type.cache_info().currsize <= 64
