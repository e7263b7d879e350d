"""FastRoute answers exactly as FastAPI's own route handler does: the same request to the same endpoints, served
once by `APIRoute` and once by `FastRoute`, gets the same status, headers and body, errors included."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
import structlog
from fastapi import APIRouter, Body, Cookie, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection

from gatherly.kernel.errors import NotFound, Unauthorized
from gatherly.kernel.routes import FastRoute
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
]


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


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
    """The same route class over FastAPI's own handler: its `get_route_handler` with FastRoute's left out."""
    if route_class is FastRoute:
        return APIRoute

    class Standard(route_class):  # type: ignore[valid-type, misc]
        def _plan(self) -> None:
            return None

    return Standard


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
    }


async def test_a_dependency_is_called_once_per_request_unless_it_says_otherwise() -> None:
    async with client(make_app(FastRoute)) as fast:
        answer = await fast.get("/items/7")
    assert answer.json()["calls"] == {"context": 1, "uncached": 2}
