"""Signatures in links that need no login (unsubscribe, invitations opt-out): whatever a link carries is refused,
never an error."""

from __future__ import annotations

import pytest

from gatherly.notifications.domain import Kind, opt_out_matches, opt_out_signature, signature_matches


@pytest.mark.parametrize("signature", ["Ö\U000bb178\x9e\U000e090cÎ\n", "é" * 40, "\ud800", ""])
def test_a_link_signature_with_any_characters_is_refused_not_an_error(signature: str) -> None:
    # Schemathesis found it: hmac.compare_digest raises TypeError on a str with non-ASCII characters (a 500).
    assert not opt_out_matches(b"key", "0" * 64, signature)
    assert not signature_matches(b"key", "user-1", Kind.EVENT_SCHEDULED, signature)


def test_the_right_signature_matches() -> None:
    assert opt_out_matches(b"key", "0" * 64, opt_out_signature(b"key", "0" * 64))
