"""Email addresses as every service compares them: one normal form (the users service's: NFC, trimmed, lower case),
checked for syntax with email-validator, and a SHA-256 of the normal form for lists that must not hold the address."""

from __future__ import annotations

import hashlib
import unicodedata

from email_validator import EmailNotValidError, validate_email

from gatherly.kernel.errors import InvalidInput

# RFC 5321's limit on a path; anything longer cannot be delivered.
MAX_ADDRESS = 254


def normalize_address(raw: str) -> str:
    """The form the users service stores and announces, so that hashes computed anywhere match."""
    return unicodedata.normalize("NFC", raw.strip()).lower()


def valid_address(raw: str, field: str = "email") -> str:
    """The normalized address, or InvalidInput naming `field`: syntax only (no DNS: the mail is the real test)."""
    address = normalize_address(raw)
    if not address or len(address) > MAX_ADDRESS:
        raise InvalidInput(f"An email address has 1 to {MAX_ADDRESS} characters.", field=field)
    try:
        # strict: RFC 5321 lengths too (64 before the @), which mail servers enforce.
        validate_email(address, check_deliverability=False, strict=True)
    except EmailNotValidError as invalid:
        raise InvalidInput(f"This is not an email address: {invalid}", field=field) from None
    return address


def address_hash(address: str) -> str:
    """The SHA-256 of the normalized address: what is kept where the address itself need not be."""
    return hashlib.sha256(normalize_address(address).encode()).hexdigest()
