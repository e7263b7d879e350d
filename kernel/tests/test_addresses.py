"""kernel.addresses (one normal form and hash of an email address for every service) and kernel.text's rule for
messages shown to another person as written."""

from __future__ import annotations

import pytest

from gatherly.kernel.addresses import address_hash, normalize_address, valid_address
from gatherly.kernel.errors import InvalidInput
from gatherly.kernel.text import check_message, message_problem


def test_an_address_is_trimmed_composed_and_lower_cased_as_the_users_service_stores_it() -> None:
    assert normalize_address("  Ann@Example.ORG \n") == "ann@example.org"
    assert normalize_address("Jose\u0301@example.org") == "jos\u00e9@example.org"  # NFC
    assert valid_address(" Ann@Example.ORG ") == "ann@example.org"
    assert address_hash("Ann@Example.ORG ") == address_hash("ann@example.org")
    assert address_hash("ann@example.org") != address_hash("ann@example.com")
    assert len(address_hash("ann@example.org")) == 64


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "ann",
        "ann@example",
        "ann@@example.org",
        "ann smith@example.org",
        "ann\u202e@example.org",
        "ann@[127.0.0.1]",
        "Ann <ann@example.org>",
        "ann@example.org\r\nBcc: x@example.org",
        "a" * 65 + "@example.org",
        "ann@" + "b" * 300 + ".org",
    ],
)
def test_what_is_not_an_address_is_refused_naming_the_field(raw: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        valid_address(raw, "invitee")
    assert refused.value.field == "invitee"


def test_a_message_keeps_line_breaks_tabs_and_joiners_and_refuses_what_hides_or_reorders_text() -> None:
    assert message_problem("Welcome!\r\nSee you\tSaturday \U0001f44b\u200d") is None
    assert message_problem("") is None  # blank is the caller's business (an optional message)
    assert "bidirectional" in (message_problem("abc\u202edef") or "")
    assert "control" in (message_problem("bell\x07") or "")
    assert "control" in (message_problem("next\x85line") or "")
    assert "visible" in (message_problem("\u200b\u2060") or "")
    with pytest.raises(InvalidInput) as refused:
        check_message("\x1b[2Jcleared", "message")
    assert refused.value.field == "message"
