"""Message ids: unique and time-ordered (the inbox key's order, which keeps its pruning a contiguous delete)."""

from __future__ import annotations

import uuid

from gatherly.kernel.messages import new_message_id


def test_message_ids_are_uuid7_in_the_order_they_were_made() -> None:
    ids = [new_message_id() for _ in range(2_000)]

    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {uuid.UUID(i).version for i in ids} == {7}
