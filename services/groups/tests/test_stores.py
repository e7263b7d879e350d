"""The stores of a read or a unit of work: made when first used, on the connection of the transaction under way."""

from __future__ import annotations

from typing import Any

from gatherly.groups.store import _STORE_NAMES, GroupsUnitOfWork, Stores
from gatherly.kernel.db import Database


def _connections(stores: Stores) -> set[int]:
    found: set[Any] = set()
    for name in _STORE_NAMES:
        store = getattr(stores, name)
        found.add(id(getattr(store, "session", None) or store.sagas.session))
    return found


def test_every_store_is_on_the_stores_connection_and_made_once() -> None:
    connection = object()
    stores = Stores(connection)  # type: ignore[arg-type]
    assert _connections(stores) == {id(connection)}
    assert stores.groups is stores.groups and stores.banners is stores.banners


def test_a_unit_of_works_stores_are_on_its_current_transactions_connection() -> None:
    uow = GroupsUnitOfWork(Database("sqlite:///:memory:"))
    first, second = object(), object()
    uow.open_stores(first)  # type: ignore[arg-type]
    assert _connections(uow) == {id(first)}
    uow.open_stores(second)  # type: ignore[arg-type]
    assert _connections(uow) == {id(second)}  # none kept from the last transaction
