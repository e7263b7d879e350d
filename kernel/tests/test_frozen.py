"""`quick_init`: the per-message records and envelopes build as their frozen dataclass's own `__init__` would, and
stay immutable. `deeply_frozen`: which types' values cannot change anywhere inside."""

from __future__ import annotations

import dataclasses
import decimal
import enum
import inspect
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict

from gatherly.kernel.frozen import deeply_frozen, quick_init
from gatherly.kernel.log.base import Record
from gatherly.kernel.messages import Envelope

NOON = datetime(2026, 1, 2, 12, tzinfo=UTC)


def ordinary_twin(cls: type) -> Any:
    """The same fields, defaults and factories in a frozen dataclass with the `__init__` dataclasses generates."""
    fields = [
        (
            field.name,
            field.type,
            dataclasses.field(default=field.default, default_factory=field.default_factory),  # type: ignore[call-overload]
        )
        for field in dataclasses.fields(cls)
    ]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True, slots=True)


def field_values(instance: Any) -> tuple[Any, ...]:
    return tuple(getattr(instance, field.name) for field in dataclasses.fields(instance))


RECORD = {
    "topic": "users",
    "partition": 3,
    "offset": 41,
    "key": "u1",
    "value": b'{"user_id":"u1"}',
    "headers": {"id": "m1", "type": "user.x"},
    "timestamp": NOON,
}
ENVELOPE = {
    "id": "m1",
    "type": "user.x",
    "schema_version": 2,
    "aggregate_type": "users",
    "aggregate_id": "u1",
    "occurred_at": NOON,
    "payload": {"user_id": "u1"},
    "correlation_id": "c1",
    "causation_id": "m0",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "vendor=1",
    "extra_headers": {"gatherly.original_topic": "users"},
}
REQUIRED_OF_ENVELOPE = {k: ENVELOPE[k] for k in list(ENVELOPE)[:7]}


@pytest.mark.parametrize(
    ("cls", "arguments"),
    [(Record, RECORD), (Envelope, ENVELOPE), (Envelope, REQUIRED_OF_ENVELOPE)],
    ids=["record", "envelope", "envelope-with-defaults"],
)
def test_a_quick_init_builds_what_the_dataclass_init_builds(cls: type, arguments: dict[str, Any]) -> None:
    twin = ordinary_twin(cls)

    assert [(p.name, p.kind) for p in inspect.signature(cls).parameters.values()] == [
        (p.name, p.kind) for p in inspect.signature(twin).parameters.values()
    ]
    assert field_values(cls(**arguments)) == field_values(twin(**arguments))
    assert field_values(cls(*arguments.values())) == field_values(twin(*arguments.values()))
    with pytest.raises(TypeError):
        cls(*list(arguments.values())[:-1] if cls is Record else [])  # a required field left out


def test_a_default_factory_makes_a_new_value_for_each_instance() -> None:
    first, second = Envelope(**REQUIRED_OF_ENVELOPE), Envelope(**REQUIRED_OF_ENVELOPE)

    assert first.extra_headers == {} and second.extra_headers == {}
    assert first.extra_headers is not second.extra_headers


@pytest.mark.parametrize(("cls", "arguments"), [(Record, RECORD), (Envelope, ENVELOPE)], ids=["record", "envelope"])
def test_instances_stay_immutable_and_compare_as_dataclasses(cls: type, arguments: dict[str, Any]) -> None:
    instance = cls(**arguments)
    first = dataclasses.fields(cls)[0].name

    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(instance, first, "other")
    with pytest.raises(dataclasses.FrozenInstanceError):
        instance.no_such_field = 1  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(instance, first)
    assert not hasattr(instance, "__dict__")  # so nothing gets around the frozen __setattr__ but object.__setattr__
    assert instance == cls(**arguments)
    assert dataclasses.replace(instance, **{first: "other"}) != instance
    assert dataclasses.replace(instance) == instance


def test_only_frozen_slotted_dataclasses_are_taken() -> None:
    @dataclasses.dataclass(frozen=True)
    class WithoutSlots:
        a: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    for cls in (WithoutSlots, NotFrozen):
        with pytest.raises(TypeError):
            quick_init(cls)


# --- deeply_frozen: what may be handed to several consumer groups at once ---------------------------------------


class FrozenPoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    lat: float
    lng: float


class OpenPoint(BaseModel):
    lat: float
    lng: float


class FrozenWithList(BaseModel):
    model_config = ConfigDict(frozen=True)

    names: list[str]


class FrozenExtras(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    name: str


class FrozenTree(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    children: tuple[FrozenTree, ...] = ()


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    "annotation",
    [
        str,
        int,
        bool,
        float,
        bytes,
        type(None),
        datetime,
        uuid.UUID,
        decimal.Decimal,
        Colour,
        str | None,
        Literal["a", 1],
        tuple[str, ...],
        tuple[int, str],
        frozenset[str],
        Annotated[str, "why"],
        FrozenPoint,
        FrozenPoint | None,
        tuple[FrozenPoint, ...],
        FrozenTree,
    ],
)
def test_immutable_values_all_the_way_down_are_deeply_frozen(annotation: Any) -> None:
    assert deeply_frozen(annotation)


@pytest.mark.parametrize(
    "annotation",
    [
        list[str],
        dict[str, int],
        set[str],
        Any,
        object,
        bytearray,
        OpenPoint,
        OpenPoint | None,
        tuple[OpenPoint, ...],
        tuple[list[str], ...],
        frozenset[OpenPoint],
        str | list[str],
        FrozenWithList,  # frozen, but its list can be changed in place
        FrozenExtras,  # extra fields kept in a dict of any values
        Annotated[list[str], "why"],
    ],
)
def test_anything_mutable_anywhere_is_not_deeply_frozen(annotation: Any) -> None:
    assert not deeply_frozen(annotation)


def test_the_events_every_write_causes_are_deeply_frozen_so_parsed_once_for_all_groups() -> None:
    # A list field (or an unfrozen nested model) added to one of these makes each consumer group parse it again.
    from gatherly.contracts.events import RsvpConfirmed
    from gatherly.contracts.groups import GroupCreated, GroupUpdated
    from gatherly.contracts.users import UserProfileUpdated

    for schema in (UserProfileUpdated, GroupCreated, GroupUpdated, RsvpConfirmed):
        assert deeply_frozen(schema), schema.__name__
