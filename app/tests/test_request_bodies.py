"""Rules every request body of every service keeps, checked on the models the routes read (a new body is covered
without a line here)."""

from __future__ import annotations

import tempfile
import typing
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError

from gatherly.app.compose import Process
from gatherly.kernel.settings import Settings


def _models_in(annotation: Any, found: set[type[BaseModel]]) -> None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in found:
            found.add(annotation)
            for field in annotation.model_fields.values():
                _models_in(field.annotation, found)
        return
    for argument in typing.get_args(annotation):
        _models_in(argument, found)


def _body_models() -> set[type[BaseModel]]:
    found: set[type[BaseModel]] = set()
    with tempfile.TemporaryDirectory() as scratch:
        for host in Process(Settings(data_dir=Path(scratch)), serve_web=False).hosts:
            for route in host.app.routes:
                if isinstance(route, APIRoute) and route.body_field is not None:
                    _models_in(route.body_field.field_info.annotation, found)
    return found


def _mentions_datetime(annotation: Any) -> bool:
    """datetime, AwareDatetime, and either inside an Optional or Annotated."""
    return "datetime" in repr(annotation).lower()


def test_every_time_in_a_request_body_refuses_unix_numbers() -> None:
    """Pydantic's lax mode reads 1700000000 (or "1700000000") as a time; the API takes RFC 3339 text only."""
    times = [
        (model, name, field)
        for model in _body_models()
        for name, field in model.model_fields.items()
        if _mentions_datetime(field.annotation)
    ]
    assert times, "no request body has a time: the test would prove nothing"
    for model, name, field in times:
        annotation = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        assert adapter.validate_python("2030-05-01T19:00:00+02:00") is not None
        for number in (1_700_000_000, 1.7e9, "1700000000", "-1"):
            with pytest.raises(ValidationError):
                adapter.validate_python(number)
                pytest.fail(f"{model.__name__}.{name} took {number!r} for a time")
