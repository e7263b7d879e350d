"""Every hosted service's routes are FastRoutes (kernel/routes.py), and every read takes its plan: a router made
without the route class, or a read given something the plan does not know, would quietly go back to FastAPI's
slower dependency solving (docs/request-path.md, twelfth pass)."""

from __future__ import annotations

from fastapi.routing import APIRoute

from gatherly.app.services import ALL
from gatherly.kernel.routes import FastRoute


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
