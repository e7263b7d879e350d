"""Immutability made cheap or checked: a faster `__init__` for frozen dataclasses built per message (a log record, its
envelope), and whether a type's values are immutable all the way down (an event shared by consumer groups)."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import types
import typing
import uuid
from typing import Any, TypeVar

from pydantic import BaseModel

T = TypeVar("T")

_NO_VALUE = object()  # stands for "not given" where a field's default comes from its factory


def quick_init(cls: type[T]) -> type[T]:
    """Replace the `__init__` of a `@dataclass(frozen=True, slots=True)` class by one that stores each field through
    its slot's descriptor, with the same parameters, defaults and factories.

    A frozen dataclass's own `__init__` stores each field with `object.__setattr__` (its `__setattr__` refuses): for
    the batch consumer's `Record` and `Envelope`, 7 and 12 fields built per message, that took 2-2.5x the time of
    a plain dataclass's `__init__` (docs/messaging.md). A slot's descriptor stores the value directly, as fast as the
    plain one. Instances stay frozen: assigning or deleting any attribute raises `FrozenInstanceError`, and without a
    `__dict__` there is no other way in but `object.__setattr__`, as before."""
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen and "__slots__" in cls.__dict__):  # type: ignore[attr-defined]
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
    if hasattr(cls, "__post_init__") or not all(field.init for field in dataclasses.fields(cls)):
        raise TypeError(f"{cls.__name__} has a __post_init__ or fields outside __init__: not handled here")
    namespace: dict[str, Any] = {"_NO_VALUE": _NO_VALUE}
    parameters: list[str] = []
    body: list[str] = []
    for field in dataclasses.fields(cls):
        name = field.name
        namespace[f"_set_{name}"] = cls.__dict__[name].__set__
        if field.default is not dataclasses.MISSING:
            namespace[f"_default_{name}"] = field.default
            parameters.append(f"{name}=_default_{name}")
        elif field.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{name}"] = field.default_factory
            parameters.append(f"{name}=_NO_VALUE")
            body.append(f"    if {name} is _NO_VALUE: {name} = _factory_{name}()")
        else:
            parameters.append(name)
        body.append(f"    _set_{name}(self, {name})")
    source = f"def __init__(self, {', '.join(parameters)}):\n" + "\n".join(body) + "\n"
    exec(source, namespace)  # as dataclasses builds its own __init__
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = cls.__init__.__annotations__
    cls.__init__ = init  # type: ignore[method-assign]
    # Refuse any assignment as a frozen dataclass without slots does: on Python 3.11 the slotted one's own methods
    # raise TypeError instead for a name that is not a field (they refer to the class that slots=True replaced).
    cls.__setattr__ = _refuse_assignment  # type: ignore[method-assign]
    cls.__delattr__ = _refuse_deletion  # type: ignore[method-assign]
    return cls


def _refuse_assignment(self: object, name: str, value: object) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_deletion(self: object, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


# Values that cannot change once made (`bool` is an `int`; an `Enum` member is a singleton).
_IMMUTABLE_TYPES: tuple[type, ...] = (
    str,
    int,
    float,
    bytes,
    type(None),
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
    uuid.UUID,
    enum.Enum,
)


def deeply_frozen(annotation: Any) -> bool:
    """Whether every value a field of this type can hold is immutable, all the way down: the scalars above, tuples
    and frozensets of such, unions and literals of them, and frozen pydantic models (no extra fields kept) whose
    fields are all deeply frozen. A list, dict, set, `Any` or unfrozen model anywhere answers no.

    For objects handed to several readers at once (an event parsed once and given to each consumer group of the
    process): none of them can change what the others see."""
    return _deeply_frozen(annotation, set())


def _deeply_frozen(annotation: Any, seen: set[type]) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _deeply_frozen(typing.get_args(annotation)[0], seen)
    if origin is typing.Literal:
        return all(isinstance(value, _IMMUTABLE_TYPES) for value in typing.get_args(annotation))
    if origin is typing.Union or origin is types.UnionType:
        return all(_deeply_frozen(arg, seen) for arg in typing.get_args(annotation))
    if origin is tuple:
        return all(arg is Ellipsis or _deeply_frozen(arg, seen) for arg in typing.get_args(annotation))
    if origin is frozenset:
        return all(_deeply_frozen(arg, seen) for arg in typing.get_args(annotation))
    if origin is not None or not isinstance(annotation, type):
        return False  # list[...], dict[...], Any, a TypeVar...
    if issubclass(annotation, _IMMUTABLE_TYPES):
        return True
    if issubclass(annotation, BaseModel):
        if annotation in seen:
            return True  # a model that refers to itself: judged by its other fields
        config = annotation.model_config
        if not config.get("frozen") or config.get("extra") == "allow":
            return False
        seen.add(annotation)
        return all(_deeply_frozen(field.annotation, seen) for field in annotation.model_fields.values())
    return False
