"""Domain errors every service raises, and the RFC 9457 problem they become over HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class DomainError(Exception):
    """A rule said no. Services subclass it; the kernel's error handlers (`install_error_handlers` in web.py)
    write any DomainError that leaves a route as problem+json with its `status` (a service's api.py may set
    the status of its own errors in one table first)."""

    status: int = 400
    title: str = "Request refused"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra


class NotFound(DomainError):
    status = 404
    title = "Not found"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"


class Unauthorized(DomainError):
    status = 401
    title = "Authentication required"


class Conflict(DomainError):
    status = 409
    title = "Conflict"


class InvalidInput(DomainError):
    """Input that breaks a rule: a 422 whose `errors` name the field at fault (`field`; the body without one), or
    each of several fields with its own message (`errors`, (field, message) pairs: one answer names them all)."""

    status = 422
    title = "Invalid input"

    def __init__(
        self, detail: str = "", *, field: str | None = None, errors: Sequence[tuple[str, str]] = (), **extra: Any
    ) -> None:
        super().__init__(detail, **extra)
        self.field = field
        self.errors = [{"field": name, "message": message} for name, message in errors] or [
            {"field": field or "body", "message": self.detail}
        ]


class TooManyRequests(DomainError):
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str = "", *, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A dependency needed to answer cannot be reached right now; the caller may try again shortly."""

    status = 503
    title = "Service unavailable"

    def __init__(self, detail: str = "", *, retry_after: int = 5, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after = retry_after
