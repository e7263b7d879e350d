"""The hard API boundary around one service's app, installed the same way for every service: size limits and the
text policy in front of its routes, no redirects built from the Host header, and an OpenAPI document that says what
the boundary answers."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware import Middleware

from gatherly.kernel.limits import RequestLimits
from gatherly.kernel.openapi import install_openapi
from gatherly.kernel.settings import Settings
from gatherly.kernel.text import TextPolicy


def install_boundary(app: FastAPI, service: str, settings: Settings) -> None:
    """Call before the app serves its first request. The middlewares go innermost (after the request-context
    one), so their refusals carry the request id like any other answer, and an exception they or the routes raise
    becomes its 500 problem (kernel/web.py: RequestContextMiddleware)."""
    install_openapi(app, service)
    # No path of the API ends in a slash, and Starlette's redirect to the path without it names the Host header's
    # host in its Location: a hostile Host made us redirect elsewhere. Such a path is a 404 like any unknown one.
    app.router.redirect_slashes = False
    app.user_middleware.append(Middleware(RequestLimits, body_limits=settings.body_limits))
    app.user_middleware.append(Middleware(TextPolicy))
