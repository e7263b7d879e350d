"""The preferences as the routes write them (preferences_json: orjson over plain dicts) are byte for byte what the
response model PreferencesOut gives, as FastAPI would serialize it, for any preferences a person can hold and the
defaults; and the plain dicts' declared fields (the TypedDicts of schemas.py) are the response models' own, so that a
field added to one and not the other fails here rather than drifting."""

from __future__ import annotations

import json
from typing import Any, get_type_hints

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, StrictInt, TypeAdapter

from gatherly.notifications.api import _preferences, _preferences_response
from gatherly.notifications.domain import (
    MAX_REMINDER_HOURS,
    MAX_REMINDERS,
    Channel,
    Kind,
    Preferences,
    preferences_from,
)
from gatherly.notifications.schemas import (
    InboxJson,
    InboxOut,
    NotificationJson,
    NotificationOut,
    PreferencesJson,
    PreferencesOut,
    RemindersBody,
    RemindersJson,
    preferences_json,
)

# What FastAPI's fast path does with a route's response model: validate what the endpoint returned, dump JSON.
AS_THE_RESPONSE_MODEL = TypeAdapter(PreferencesOut)

choices = st.dictionaries(st.sampled_from(Kind), st.booleans())
# Any 64-bit integers, up to as many as RemindersBody allows (the API keeps them to 1..672, MAX_REMINDERS of them).
hours = st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=MAX_REMINDERS).map(tuple)


def as_the_response_model(chosen: Preferences) -> bytes:
    """The preferences as the routes made them before: every kind as `wants` answers it (the tables as they were
    made), PreferencesOut, validated and dumped as FastAPI does."""
    made = PreferencesOut(
        email={kind.value: chosen.wants(Channel.EMAIL, kind) for kind in Kind},
        push={kind.value: chosen.wants(Channel.PUSH, kind) for kind in Kind},
        reminders=RemindersBody(hours_before=list(chosen.reminder_hours)),
    )
    return AS_THE_RESPONSE_MODEL.dump_json(AS_THE_RESPONSE_MODEL.validate_python(made))


@given(choices, choices, hours)
def test_any_preferences_as_json_are_what_the_response_model_gives(
    email: dict[Kind, bool], push: dict[Kind, bool], reminder_hours: tuple[int, ...]
) -> None:
    chosen = Preferences(email, push, reminder_hours)
    assert preferences_json(_preferences(chosen)) == as_the_response_model(chosen)


@given(choices, choices, hours)
def test_get_and_put_answer_any_preferences_as_the_response_model_gives_them(
    email: dict[Kind, bool], push: dict[Kind, bool], reminder_hours: tuple[int, ...]
) -> None:
    chosen = Preferences(email, push, reminder_hours)
    response = _preferences_response(chosen)  # both routes' answer
    assert response.body == as_the_response_model(chosen)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"


def test_the_defaults_and_a_choice_as_json_are_what_the_response_model_gives() -> None:
    defaults = preferences_json(_preferences(Preferences()))
    assert defaults == as_the_response_model(Preferences())
    written: dict[str, Any] = json.loads(defaults)
    assert list(written) == list(PreferencesOut.model_fields)
    assert list(written["email"]) == [kind.value for kind in Kind] == list(written["push"])
    assert [kind for kind, on in written["email"].items() if not on] == ["comment_posted"]
    assert [kind for kind, on in written["push"].items() if not on] == ["weekly_digest"]
    assert written["reminders"] == {"hours_before": [24, 2]}
    chosen = preferences_from({"comment_posted": True}, {"event_reminder": False}, [1, MAX_REMINDER_HOURS, 1])
    assert preferences_json(_preferences(chosen)) == as_the_response_model(chosen)
    assert b'"reminders":{"hours_before":[672,1]}' in preferences_json(_preferences(chosen))


def _declared(model: type[BaseModel]) -> dict[str, Any]:
    return {name: field.annotation for name, field in model.model_fields.items()}


def _typed(shape: type) -> dict[str, Any]:
    return get_type_hints(shape)


@pytest.mark.parametrize(
    ("shape", "model", "nested"),
    [
        (NotificationJson, NotificationOut, {}),
        (InboxJson, InboxOut, {"items": (list[NotificationJson], list[NotificationOut])}),
        (PreferencesJson, PreferencesOut, {"reminders": (RemindersJson, RemindersBody)}),
        (RemindersJson, RemindersBody, {"hours_before": (list[int], list[StrictInt])}),
    ],
)
def test_the_json_shapes_name_the_response_models_fields_in_their_order(
    shape: type, model: type[BaseModel], nested: dict[str, tuple[Any, Any]]
) -> None:
    """Names and order (the order is the JSON's), and types: the same, or where a shape holds another's plain form
    (a TypedDict in place of a model, int in place of StrictInt) the pair named."""
    typed, declared = _typed(shape), _declared(model)
    assert list(typed) == list(declared)
    for name, (inner_shape, inner_model) in nested.items():
        assert typed.pop(name) == inner_shape
        assert declared.pop(name) == inner_model
    assert typed == declared
