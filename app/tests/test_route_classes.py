"""Every hosted service's routes are FastRoutes (kernel/routes.py), and every read takes its plan: a router made
without the route class, or a read given something the plan does not know, would quietly go back to FastAPI's
slower dependency solving (docs/request-path.md, twelfth pass)."""

from __future__ import annotations

from fastapi.routing import APIRoute

from gatherly.app.services import ALL
from gatherly.kernel.routes import FastRoute, _as_is


def test_every_service_route_is_a_fast_route_and_every_read_takes_the_plan() -> None:
    routes = [
        (name, route)
        for name, definition in ALL.items()
        for router in definition.routers
        for route in router.routes
        if isinstance(route, APIRoute)
    ]
    assert routes
    assert [f"{name} {route.path}" for name, route in routes if not isinstance(route, FastRoute)] == []
    reads = [(name, route) for name, route in routes if isinstance(route, FastRoute) and "GET" in route.methods]
    assert [f"{name} {route.path}" for name, route in reads if route._plan() is None] == []


def test_every_answer_left_unvalidated_is_one_fastapis_validation_gives_back_as_it_is() -> None:
    """FastRoute serializes an exact instance of a route's response model without FastAPI's re-validation; for
    every service route where it does, that re-validation returns the very instance, untouched."""
    checked = []
    for definition in ALL.values():
        for router in definition.routers:
            for route in router.routes:
                if not isinstance(route, FastRoute) or (model := _as_is(route.response_field)) is None:
                    continue
                assert route.response_field is not None
                instance = model.model_construct()  # whatever it holds: an instance is not looked into
                value, errors = route.response_field.validate(instance, {}, loc=("response",))
                assert value is instance and errors == [], route.path
                assert instance.__dict__ == model.model_construct().__dict__, route.path
                checked.append(route.path)
    assert checked
